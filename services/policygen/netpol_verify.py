"""NetworkPolicy verification: every flow must be allowed by the candidate policies (plus the
existing ones when asked), what else the candidates allow, and a diff from the existing policies
that select the same pods. Pure; the servicer and `parallax netpol verify` call `verify`."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from servicekit.errors import InvalidArgument
from services.policygen.cluster import Cluster
from services.policygen.domain import WorkloadId
from services.policygen.netpol_eval import (
    Evaluator,
    Match,
    Policy,
    Verdict,
    parse_policy,
    selector_matches,
)
from services.policygen.peers import Endpoint, Flow


@dataclass(frozen=True)
class Extra:
    """Traffic a candidate allows that no flow used, or that is broader than any flow."""

    policy: str
    direction: str
    peer: str
    ports: str


@dataclass(frozen=True)
class NetpolVerification:
    """The result of verifying candidate policies."""

    passed: bool
    verdicts: tuple[tuple[Flow, Verdict], ...]
    extras: tuple[Extra, ...]
    existing: tuple[str, ...]
    diff: str


def load_policies(text: str) -> list[Policy]:
    """Read NetworkPolicies from YAML documents; InvalidArgument for anything else."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"policies are not YAML: {exc}") from None
    if not documents:
        raise InvalidArgument("no policy given")
    return [parse_policy(d) for d in documents]


def endpoint_for(
    cluster: Cluster, address: str, workload: WorkloadId | None, host_network: bool = False
) -> Endpoint:
    """Resolve a flow end: a pod by address, a Service's backends (after DNAT), the workload's
    pod template, or a bare address."""
    pod = cluster.pod_at(address) if address else None
    if pod is not None:
        labels = None if pod.host_network else dict(pod.labels)
        return Endpoint(address, pod.namespace, labels, pod.host_network, pod.ports)
    service = cluster.service_at(address) if address else None
    if service is not None and service.selector:
        backends = cluster.backing_pods(service)
        chosen = backends[0] if backends else None
        labels = dict(chosen.labels) if chosen else dict(service.selector)
        return Endpoint(address, service.namespace, labels, False, chosen.ports if chosen else ())
    if workload is not None and workload.name:
        found = cluster.workload(workload.namespace, workload.kind, workload.name)
        if found is not None:
            template = found.template
            return Endpoint(address, found.namespace, dict(template.labels), False, template.ports)
    return Endpoint(address, host_network=host_network or address in cluster.node_ips)


def verify(
    candidates: list[Policy], flows: list[Flow], cluster: Cluster, include_existing: bool
) -> NetpolVerification:
    """Evaluate `flows` against the candidates, list extra allowances and diff the existing."""
    existing = [parse_policy(p) for p in cluster.network_policies]
    keys = {c.key for c in candidates}
    evaluated = candidates + (
        [e for e in existing if e.key not in keys] if include_existing else []
    )
    evaluator = Evaluator(evaluated, cluster.namespace_labels)
    verdicts = tuple((flow, evaluator.evaluate(flow)) for flow in flows)
    used = {m for _, verdict in verdicts for m in verdict.matches}
    overlapping = _overlapping(candidates, existing, cluster)
    return NetpolVerification(
        passed=all(v.allowed for _, v in verdicts),
        verdicts=verdicts,
        extras=tuple(e for c in candidates for e in _extras(c, used)),
        existing=tuple(p.key for p in overlapping),
        diff=_diff(overlapping, candidates),
    )


def _extras(policy: Policy, used: set[Match]) -> list[Extra]:
    extras: list[Extra] = []
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for index, rule in enumerate(getattr(policy, direction)):
            peers = list(enumerate(rule.get(key) or ())) or [(-1, None)]
            ports = list(enumerate(rule.get("ports") or ())) or [(-1, None)]
            for peer_index, peer in peers:
                for port_index, port in ports:
                    broad = peer is None or port is None or _broad(peer)
                    match = (policy.key, direction, index, peer_index, port_index)
                    if broad or match not in used:
                        text = _describe_peer(policy.namespace, peer)
                        extras.append(Extra(policy.key, direction, text, _describe_port(port)))
    return extras


def _broad(peer: Mapping[str, Any]) -> bool:
    if "ipBlock" in peer:
        return not str(peer["ipBlock"].get("cidr", "")).endswith(("/32", "/128"))
    return not (peer.get("podSelector") or {})


def _describe_peer(namespace: str, peer: Mapping[str, Any] | None) -> str:
    if peer is None:
        return "any peer"
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        excepted = block.get("except") or []
        return str(block["cidr"]) + (f" except {', '.join(excepted)}" if excepted else "")
    pods = _describe_selector(peer.get("podSelector"), "all pods", "pods ")
    if "namespaceSelector" not in peer:
        return f"{pods} in namespace {namespace}"
    return f"{pods} in namespaces " + _describe_selector(peer["namespaceSelector"], "(all)", "")


def _describe_selector(selector: Mapping[str, Any] | None, everything: str, prefix: str) -> str:
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    terms += [
        f"{e['key']} {e['operator']} {','.join(e.get('values') or [])}".strip()
        for e in selector.get("matchExpressions") or ()
    ]
    return prefix + ",".join(terms) if terms else everything


def _describe_port(port: Mapping[str, Any] | None) -> str:
    if port is None:
        return "all ports"
    protocol = port.get("protocol", "TCP")
    if "port" not in port:
        return f"{protocol} all ports"
    end = port.get("endPort")
    return f"{protocol} {port['port']}" + (f"-{end}" if end else "")


def _overlapping(
    candidates: list[Policy], existing: list[Policy], cluster: Cluster
) -> list[Policy]:
    found: list[Policy] = []
    for candidate in candidates:
        selected = [dict(candidate.pod_selector.get("matchLabels") or {})] + [
            dict(p.labels)
            for p in cluster.pods
            if p.namespace == candidate.namespace
            and selector_matches(candidate.pod_selector, p.labels)
        ]
        for policy in existing:
            if policy.namespace != candidate.namespace or policy in found:
                continue
            if any(selector_matches(policy.pod_selector, labels) for labels in selected):
                found.append(policy)
    return sorted(found, key=lambda p: p.key)


def _diff(existing: list[Policy], candidates: list[Policy]) -> str:
    if not existing:
        return ""
    before = yaml.safe_dump_all([dict(p.raw) for p in existing], sort_keys=False)
    after = yaml.safe_dump_all([dict(p.raw) for p in candidates], sort_keys=False)
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), "existing", "candidate"
    )
    return "".join(lines)
