"""Network controls NET-01..NET-09: NetworkPolicy coverage per workload and exposure.

Coverage uses full LabelSelector semantics, per namespace, with ingress and egress judged
separately; registered on `REGISTRY` and run by `rules.evaluate`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.posture.domain import Manifest, Severity
from services.posture.rules.engine import (
    CONFIRM,
    CONFIRM_REFUTE,
    Context,
    Hit,
    Meta,
    Registry,
    selector_matches,
)
from services.posture.workload import (
    PodView,
    as_list,
    as_map,
    as_str,
    effective_namespace,
    string_list,
)

REGISTRY = Registry("Network")
POLICY_KINDS = ("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
EXTERNAL_SERVICE_TYPES = frozenset({"NodePort", "LoadBalancer"})
SENSITIVE_APPS = (
    "nifi", "argo-server", "weave-scope", "kubeflow", "kubernetes-dashboard", "jenkins",
    "prometheus", "ollama", "vllm", "kserve", "triton", "ray", "mlflow", "jupyterhub", "seldon",
    "bentoml",
)  # fmt: skip
SSH_PORTS = frozenset({22, 2222})


@dataclass(frozen=True)
class Policy:
    """A network policy reduced to what coverage needs."""

    name: str
    namespace: str
    cluster_wide: bool
    selector: Any
    isolates: Mapping[str, bool]
    allows_all: Mapping[str, bool]

    def selects(self, pod: PodView) -> bool:
        if not self.cluster_wide and self.namespace != pod.namespace:
            return False
        return selector_matches(self.selector, pod.labels)


def _allow_all(rules: Any, peers: str) -> bool:
    """An empty rule (no peers, no ports) allows everything in that direction."""
    return any(
        isinstance(r, Mapping) and not as_list(r.get(peers)) and not as_list(r.get("ports"))
        for r in as_list(rules)
    )


def _policy(manifest: Manifest) -> Policy:
    spec = as_map(manifest.body.get("spec"))
    if manifest.kind == "NetworkPolicy":
        declared = string_list(spec.get("policyTypes"))
        types = (
            set(declared) if declared else {"Ingress"} | ({"Egress"} if "egress" in spec else set())
        )
        selector = spec.get("podSelector", {})
        selector = {} if selector is None else selector
    else:
        types = {t for t, key in (("Ingress", "ingress"), ("Egress", "egress")) if key in spec}
        types |= {
            t for t, key in (("Ingress", "ingressDeny"), ("Egress", "egressDeny")) if key in spec
        }
        selector = spec.get("endpointSelector")
    return Policy(
        name=f"{manifest.kind}/{manifest.name}",
        namespace=effective_namespace(manifest),
        cluster_wide=manifest.kind == "CiliumClusterwideNetworkPolicy",
        selector=selector,
        isolates={"Ingress": "Ingress" in types, "Egress": "Egress" in types},
        allows_all={
            "Ingress": _allow_all(
                spec.get("ingress"), "from" if manifest.kind == "NetworkPolicy" else "fromEndpoints"
            ),
            "Egress": _allow_all(
                spec.get("egress"), "to" if manifest.kind == "NetworkPolicy" else "toEndpoints"
            ),
        },
    )


def policies(ctx: Context) -> tuple[Policy, ...]:
    return ctx.index(
        "network-policies", lambda c: tuple(_policy(m) for m in c.of_kind(*POLICY_KINDS))
    )


def _policies_by_namespace(ctx: Context) -> Mapping[str | None, list[Policy]]:
    """Namespaced policies by namespace, and cluster-wide ones under None."""
    table: dict[str | None, list[Policy]] = defaultdict(list)
    for policy in policies(ctx):
        table[None if policy.cluster_wide else policy.namespace].append(policy)
    return table


def selecting(pod: PodView, ctx: Context) -> list[Policy]:
    """The policies that select `pod`: only its namespace's and cluster-wide ones can. Answered
    once per namespace and label set, as NET-01, NET-02 and NET-09 all ask."""

    def compute() -> list[Policy]:
        table = ctx.index("network-policies-by-namespace", _policies_by_namespace)
        candidates = (*table.get(pod.namespace, ()), *table.get(None, ()))
        return [p for p in candidates if p.selects(pod)]

    return ctx.memo("network-selecting", (pod.namespace, frozenset(pod.labels.items())), compute)


def restricted(chosen: Sequence[Policy], direction: str) -> bool:
    """Isolated by some policy in `direction`, and no isolating policy allows everything."""
    isolating = [p for p in chosen if p.isolates[direction]]
    return bool(isolating) and not any(p.allows_all[direction] for p in isolating)


_FLOW_RUNTIME = (
    "observed peers per pod (connect/accept 5-tuples, DNS names, namespaces) are what a "
    "least-privilege policy must allow; a pod with no traffic can get default-deny now."
)


@REGISTRY.pod(
    Meta(
        "NET-01", "Workload not selected by any NetworkPolicy", Severity.MEDIUM,
        ks=("C-0260",), ckv=("CKV2_K8S_6",), fw="CS SEC SOC2 WS",
        runtime=(CONFIRM_REFUTE, _FLOW_RUNTIME),
        fix="Add a NetworkPolicy whose podSelector selects this workload (start from "
            "default-deny and allow the observed peers).",
    )
)  # fmt: skip
def unselected(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A pod no policy selects accepts and opens any connection: the flat network lateral
    movement needs."""
    if not selecting(pod, ctx):
        yield Hit(pod.labels_path, f"no NetworkPolicy in {pod.namespace!r} selects these labels")


def _direction(pod: PodView, ctx: Context, direction: str) -> Iterator[Hit]:
    if not restricted(selecting(pod, ctx), direction):
        message = f"{direction.lower()} is not restricted by any NetworkPolicy"
        yield Hit(pod.labels_path, message)


@REGISTRY.pod(
    Meta(
        "NET-02", "Ingress not restricted by a NetworkPolicy", Severity.MEDIUM,
        ks=("C-0030",), fw="AB NSA",
        unmapped="Checkov has no per-direction NetworkPolicy check.",
        runtime=(CONFIRM_REFUTE, _FLOW_RUNTIME),
        fix="Select the workload with a NetworkPolicy that lists Ingress in policyTypes and "
            "allows only the needed sources.",
    )
)  # fmt: skip
def ingress_open(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Unrestricted ingress lets any pod (or external peer) connect to the workload."""
    yield from _direction(pod, ctx, "Ingress")


@REGISTRY.pod(
    Meta(
        "NET-09", "Egress not restricted by a NetworkPolicy", Severity.MEDIUM,
        ks=("C-0030",), fw="AB NSA",
        unmapped="Checkov has no per-direction NetworkPolicy check.",
        runtime=(CONFIRM_REFUTE, "egress destinations actually used (internet, "
                 "169.254.169.254 metadata, API server) drive the egress policy."),
        fix="Select the workload with a NetworkPolicy that lists Egress in policyTypes and "
            "allows only DNS and the needed destinations.",
    )
)  # fmt: skip
def egress_open(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Unrestricted egress lets a compromised pod reach the metadata API, the internet and
    every service."""
    yield from _direction(pod, ctx, "Egress")


@REGISTRY.object(
    Meta(
        "NET-03", "Namespace without any NetworkPolicy", Severity.MEDIUM,
        ks=("C-0054", "C-0206", "C-0049"), fw="AB MITRE NSA", cis=("5.3.2",),
        unmapped="Checkov has no namespace-level NetworkPolicy check.",
        runtime=(CONFIRM, "cross-namespace flows observed are the lateral movement paths a "
                 "policy would cut."),
        fix="Add a default-deny NetworkPolicy (podSelector: {}) to the namespace.",
    ),
    kinds=("Namespace",),
)  # fmt: skip
def namespace_without_policy(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """A namespace with no policy at all leaves every pod in it open in both directions."""
    covered = {p.namespace for p in policies(ctx) if not p.cluster_wide}
    cluster_wide = any(p.cluster_wide and p.selector == {} for p in policies(ctx))
    if manifest.name not in covered and not cluster_wide:
        yield Hit(("metadata", "name"), f"namespace {manifest.name!r} has no NetworkPolicy")


@dataclass(frozen=True)
class Service:
    """A Service reduced to its type and selector (label pairs that must all match)."""

    manifest: Manifest
    type: str
    selector: frozenset[tuple[str, str]]

    def selects(self, labels: Mapping[str, str]) -> bool:
        return bool(self.selector) and self.selector <= labels.items()


def _service(manifest: Manifest) -> Service:
    spec = as_map(manifest.body.get("spec"))
    pairs = as_map(spec.get("selector")).items()
    selector = frozenset((k, v) for k, v in pairs if isinstance(k, str) and isinstance(v, str))
    return Service(manifest, as_str(spec.get("type")), selector)


@dataclass(frozen=True)
class NamespaceServices:
    """The Services of one namespace, each indexed under one pair of its selector (its anchor):
    a pod's labels must hold every pair, so only Services anchored on one of them can match."""

    services: Sequence[Service]
    by_anchor: Mapping[tuple[str, str], Sequence[int]]

    @classmethod
    def of(cls, services: Sequence[Service]) -> NamespaceServices:
        by_anchor: dict[tuple[str, str], list[int]] = defaultdict(list)
        for position, service in enumerate(services):
            if service.selector:
                by_anchor[min(service.selector)].append(position)
        return cls(services, by_anchor)

    def selecting(self, labels: Mapping[str, str]) -> list[Service]:
        """The Services that select `labels`, in manifest order."""
        positions = {p for pair in labels.items() for p in self.by_anchor.get(pair, ())}
        chosen = (self.services[p] for p in sorted(positions))
        return [service for service in chosen if service.selects(labels)]


def _services_by_namespace(ctx: Context) -> Mapping[str, NamespaceServices]:
    table: dict[str, list[Service]] = defaultdict(list)
    for manifest in ctx.of_kind("Service"):
        table[effective_namespace(manifest)].append(_service(manifest))
    return {namespace: NamespaceServices.of(services) for namespace, services in table.items()}


def _ingress_backends(ingress: Manifest) -> Iterator[str]:
    spec = as_map(ingress.body.get("spec"))
    default = as_map(spec.get("defaultBackend")) or as_map(spec.get("backend"))
    yield as_str(as_map(default.get("service")).get("name")) or as_str(default.get("serviceName"))
    for rule in as_list(spec.get("rules")):
        for path in as_list(as_map(as_map(rule).get("http")).get("paths")):
            backend = as_map(as_map(path).get("backend"))
            service = as_map(backend.get("service"))
            yield as_str(service.get("name")) or as_str(backend.get("serviceName"))


def exposures(pod: PodView, ctx: Context) -> list[str]:
    """'Service/x (NodePort)' or 'Ingress/y -> Service/x' for each external path to the pod."""
    services = ctx.index("services", _services_by_namespace).get(pod.namespace)
    chosen = services.selecting(pod.labels) if services is not None else []
    selecting_pod = {s.manifest.name: s for s in chosen}
    found = []
    for name, service in selecting_pod.items():
        if service.type in EXTERNAL_SERVICE_TYPES:
            found.append(f"Service/{name} ({service.type})")
    for ingress in ctx.of_kind("Ingress") if selecting_pod else ():
        if effective_namespace(ingress) == pod.namespace:
            backends = set(_ingress_backends(ingress)) & set(selecting_pod)
            found += [f"Ingress/{ingress.name} -> Service/{name}" for name in sorted(backends)]
    return found


@REGISTRY.pod(
    Meta(
        "NET-04", "Workload exposed externally", Severity.HIGH,
        ks=("C-0256",), fw="CS SEC",
        unmapped="Checkov has no Service-to-workload exposure check.",
        runtime=(CONFIRM, "inbound connections from non-cluster source IPs confirm real "
                 "exposure."),
        fix="Use a ClusterIP Service behind an authenticated ingress, or restrict "
            "loadBalancerSourceRanges.",
    )
)  # fmt: skip
def exposed(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A NodePort, LoadBalancer or Ingress puts the workload on the internet's attack surface."""
    paths = exposures(pod, ctx)
    if paths:
        yield Hit(
            pod.labels_path, f"reachable from outside the cluster via {', '.join(sorted(paths))}"
        )


@REGISTRY.pod(
    Meta(
        "NET-05", "Sensitive interface exposed", Severity.MEDIUM,
        ks=("C-0021",), ckv=("CKV_K8S_33", "CKV_K8S_34", "CKV_K8S_44", "CKV_K8S_45"),
        fw="MITRE",
        runtime=(CONFIRM, "external inbound connections to the workload's ports."),
        fix="Keep dashboards and ML/admin UIs behind a ClusterIP Service and an authenticated "
            "proxy.",
    )
)  # fmt: skip
def sensitive_exposed(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Admin UIs (dashboards, Jenkins, Jupyter, model servers) exposed externally are prime
    initial-access targets."""
    name = pod.manifest.name.lower()
    app = next((a for a in SENSITIVE_APPS if a in name), None)
    if app is not None and exposures(pod, ctx):
        yield Hit(("metadata", "name"), f"sensitive interface {app!r} is exposed externally")


def _workload_labels(ctx: Context) -> Mapping[tuple[str, str, str], list[Mapping[str, str]]]:
    """(namespace, label, value) -> the label sets of the workloads there that carry it."""
    table: dict[tuple[str, str, str], list[Mapping[str, str]]] = defaultdict(list)
    for view in ctx.pod_views:
        for key, value in view.labels.items():
            table[(view.namespace, key, value)].append(view.labels)
    return table


@REGISTRY.object(
    Meta(
        "NET-06", "SSH port exposed by a Service", Severity.LOW,
        ks=("C-0042",), fw="MITRE",
        unmapped="Checkov has no SSH exposure check.",
        runtime=(CONFIRM_REFUTE, "exec of sshd or a listening socket on 22 inside the pod "
                 "confirms; absence refutes the port heuristic."),
        fix="Remove the SSH port; use kubectl exec with RBAC and audit instead.",
    ),
    kinds=("Service",),
)  # fmt: skip
def ssh_port(service: Manifest, ctx: Context) -> Iterator[Hit]:
    """An SSH server in a pod is an unaudited side door around Kubernetes' access control."""
    parsed = _service(service)
    if not parsed.selector:
        return
    # A selected workload carries every pair of the selector, so any one pair narrows the search.
    key, value = min(parsed.selector)
    table = ctx.index("workload-labels", _workload_labels)
    candidates = table.get((effective_namespace(service), key, value), ())
    if not any(parsed.selects(workload) for workload in candidates):
        return
    for index, port in enumerate(as_list(as_map(service.body.get("spec")).get("ports"))):
        entry = as_map(port)
        ssh = SSH_PORTS & {entry.get("port"), entry.get("targetPort")}
        if ssh:
            yield Hit(("spec", "ports", index), f"Service exposes SSH port {min(ssh)}")
