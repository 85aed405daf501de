"""The Kubernetes objects policygen resolves peers and labels from (pods, workloads, services,
endpoints, namespaces, nodes, NetworkPolicies) as plain dataclasses, with the lookups the
generators need; cluster_parse.py fills them from manifests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
# Labels a controller stamps on pods (never stable across rollouts) and volatile release labels.
UNSTABLE_LABELS = frozenset(
    (
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-name",
        "controller-uid",
        "job-name",
        "app.kubernetes.io/version",
        "helm.sh/chart",
    )
)
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class ContainerPort:
    """A named or unnamed container port."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Pod:
    """A pod, or a workload's pod template when `ip` is empty."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str = ""
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service; `target` is a number or a container port name."""

    port: int
    target: int | str
    protocol: str


@dataclass(frozen=True)
class Service:
    """A Service with its selector and cluster IPs."""

    namespace: str
    name: str
    selector: Mapping[str, str]
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True)
class Workload:
    """A controller with its pod template."""

    kind: str
    namespace: str
    name: str
    template: Pod
    spec: Mapping[str, Any]


@dataclass
class Cluster:
    """Everything read from the objects, indexed for lookup by address."""

    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    node_ips: set[str] = field(default_factory=set)
    endpoints: dict[tuple[str, str], tuple[tuple[str, ...], tuple[int, ...]]] = field(
        default_factory=dict
    )
    network_policies: list[dict[str, Any]] = field(default_factory=list)
    service_accounts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """Return a namespace's labels, with the label the API server always sets."""
        return {**self.namespaces.get(namespace, {}), NAMESPACE_LABEL: namespace}

    def pod_at(self, ip: str) -> Pod | None:
        """Return the pod with address `ip` (host-network pods share their node's address)."""
        found = [p for p in self.pods if p.ip == ip]
        return next((p for p in found if not p.host_network), found[0] if found else None)

    def service_at(self, ip: str) -> Service | None:
        """Return the Service whose cluster IP is `ip`."""
        return next((s for s in self.services if ip in s.cluster_ips), None)

    def workload(self, namespace: str, kind: str, name: str) -> Workload | None:
        """Return the named workload."""
        match = (namespace, kind, name)
        return next((w for w in self.workloads if (w.namespace, w.kind, w.name) == match), None)

    def backing_pods(self, service: Service) -> list[Pod]:
        """Return the pods (and pod templates) a Service selects."""
        if not service.selector:
            return []
        candidates = [*self.pods, *(w.template for w in self.workloads)]
        return [
            p
            for p in candidates
            if p.namespace == service.namespace
            and all(p.labels.get(k) == v for k, v in service.selector.items())
        ]


def stable_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Return `labels` without controller-generated and volatile ones, sorted by key."""
    return {k: labels[k] for k in sorted(labels) if k not in UNSTABLE_LABELS}
