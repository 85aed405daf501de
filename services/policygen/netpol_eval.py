"""A NetworkPolicy evaluator with the Kubernetes semantics: label selectors with
matchExpressions, ipBlock with except, ports with protocols, named ports and endPort, policyTypes
(and their defaults), policies adding up, and default allow for a pod no policy selects. Pure;
netpol_verify.py uses it."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from servicekit.errors import InvalidArgument
from services.policygen.peers import Endpoint, Flow

# (policy key, direction, rule index, peer index, port index); -1 means "no list: everything".
Match = tuple[str, str, int, int, int]


@dataclass(frozen=True)
class Policy:
    """One NetworkPolicy, its types resolved."""

    namespace: str
    name: str
    pod_selector: Mapping[str, Any]
    types: frozenset[str]
    ingress: tuple[Mapping[str, Any], ...]
    egress: tuple[Mapping[str, Any], ...]
    raw: Mapping[str, Any] = field(compare=False)

    @property
    def key(self) -> str:
        """Return "namespace/name"."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Verdict:
    """The evaluation of one flow."""

    allowed: bool
    deciding: tuple[str, ...]
    reason: str
    matches: tuple[Match, ...] = ()


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """Read a NetworkPolicy object; InvalidArgument when it is not one."""
    if obj.get("kind") != "NetworkPolicy":
        raise InvalidArgument(f"expected a NetworkPolicy, got kind {obj.get('kind')!r}")
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if "podSelector" not in spec:
        raise InvalidArgument(f"NetworkPolicy {meta.get('name')!r} has no spec.podSelector")
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    return Policy(
        meta.get("namespace") or "default",
        meta.get("name", ""),
        spec.get("podSelector") or {},
        frozenset(types),
        tuple(spec.get("ingress") or ()),
        tuple(spec.get("egress") or ()),
        obj,
    )


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Apply a LabelSelector: matchLabels and matchExpressions all hold; {} matches all."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression["key"], expression["operator"]
        values = set(expression.get("values") or ())
        present = key in labels
        holds = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(operator)
        if holds is None:
            raise InvalidArgument(f"unknown matchExpressions operator {operator!r}")
        if not holds:
            return False
    return True


class Evaluator:
    """Evaluates flows against a set of policies; `namespace_labels` gives a namespace's labels."""

    def __init__(
        self, policies: list[Policy], namespace_labels: Callable[[str], Mapping[str, str]]
    ):
        self.policies = policies
        self.namespace_labels = namespace_labels

    def selecting(self, endpoint: Endpoint, policy_type: str) -> list[Policy]:
        """Return the policies that isolate `endpoint` for `policy_type`."""
        if endpoint.labels is None:
            return []  # not a pod (or host network): NetworkPolicy does not apply
        return [
            p
            for p in self.policies
            if p.namespace == endpoint.namespace
            and policy_type in p.types
            and selector_matches(p.pod_selector, endpoint.labels)
        ]

    def evaluate(self, flow: Flow) -> Verdict:
        """Evaluate `flow`: the source's egress and the destination's ingress must both allow."""
        sides = (
            ("Egress", "egress", "to", flow.source, flow.destination),
            ("Ingress", "ingress", "from", flow.destination, flow.source),
        )
        deciding: list[str] = []
        matches: list[Match] = []
        for policy_type, direction, key, selected, other in sides:
            isolating = self.selecting(selected, policy_type)
            if not isolating:
                continue
            found = [
                m for p in isolating for m in self._rule_matches(p, direction, key, other, flow)
            ]
            if not found:
                names = ", ".join(p.key for p in isolating)
                reason = f"{direction} denied: {names} isolate the pod and no rule allows the flow"
                return Verdict(False, tuple(p.key for p in isolating), reason)
            matches += found
            deciding += sorted({m[0] for m in found})
        if not deciding:
            return Verdict(True, (), "no policy selects either pod: allowed by default")
        return Verdict(
            True, tuple(dict.fromkeys(deciding)), "allowed by policy rules", tuple(matches)
        )

    def _rule_matches(
        self, policy: Policy, direction: str, key: str, other: Endpoint, flow: Flow
    ) -> list[Match]:
        found: list[Match] = []
        for index, rule in enumerate(getattr(policy, direction)):
            peers = [i for i, p in enumerate(rule.get(key) or ()) if self._peer(policy, p, other)]
            ports = [i for i, p in enumerate(rule.get("ports") or ()) if _port(p, flow)]
            peer_hits = peers if rule.get(key) else [-1]
            port_hits = ports if rule.get("ports") else [-1]
            found += [(policy.key, direction, index, a, b) for a in peer_hits for b in port_hits]
        return found

    def _peer(self, policy: Policy, peer: Mapping[str, Any], other: Endpoint) -> bool:
        if "ipBlock" in peer:
            return _in_block(peer["ipBlock"], other.address)
        if other.labels is None:
            return False
        if "namespaceSelector" in peer:
            namespace_ok = selector_matches(
                peer["namespaceSelector"], self.namespace_labels(other.namespace)
            )
        else:
            namespace_ok = other.namespace == policy.namespace
        return namespace_ok and selector_matches(peer.get("podSelector"), other.labels)


def _in_block(block: Mapping[str, Any], address: str) -> bool:
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if ip.version != network.version or ip not in network:
        return False
    return not any(
        ip in ipaddress.ip_network(e, strict=False)
        for e in block.get("except") or ()
        if ipaddress.ip_network(e, strict=False).version == ip.version
    )


def _port(entry: Mapping[str, Any], flow: Flow) -> bool:
    if entry.get("protocol", "TCP") != flow.protocol:
        return False
    port = entry.get("port")
    if port is None:
        return True
    if isinstance(port, str) and not port.isdigit():
        return any(
            p.name == port and p.protocol == flow.protocol and p.port == flow.port
            for p in flow.destination.ports
        )
    return int(port) <= flow.port <= int(entry.get("endPort") or port)
