"""Live-cluster input of policygen: when a request carries no objects, the objects the
generators read are listed from the configured cluster through `servicekit.kube` and parsed
like manifests. Called by the servicer; `parallax netpol --objects` and inline objects skip it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kubernetes.client

from servicekit.kube import ClusterError, Kind, Snapshot, api_client_from, list_objects
from services.policygen import cluster_parse
from services.policygen.cluster import Cluster
from services.policygen.domain import WorkloadId

_CORE, _APPS, _BATCH = (
    kubernetes.client.CoreV1Api,
    kubernetes.client.AppsV1Api,
    kubernetes.client.BatchV1Api,
)

# What peers resolve against, cluster-wide: pods (labels, ports, host network), Services (peers
# reached by cluster IP, and kube-dns, whose pods are found by its selector), namespaces
# (namespaceSelector labels), nodes (host-network and kubelet addresses) and the NetworkPolicies
# already there (the verification's diff).
NETWORK_KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "v1", _CORE, "namespace", namespaced=False),
    Kind("Node", "v1", _CORE, "node", namespaced=False),
    Kind("Pod", "v1", _CORE, "pod"),
    Kind("Service", "v1", _CORE, "service"),
    Kind("NetworkPolicy", "networking.k8s.io/v1", kubernetes.client.NetworkingV1Api,
         "network_policy"),
)  # fmt: skip
# Only the `default` namespace's Endpoints are read: `default/kubernetes` holds the API
# server's addresses, which no label selects.
ENDPOINTS = Kind("Endpoints", "v1", _CORE, "endpoints")
API_SERVER_NAMESPACE = "default"
# The requested workload's own kind, listed in its namespace only: its pod template gives the
# policy's podSelector and the hardening patch's containers.
WORKLOAD_KINDS: dict[str, Kind] = {
    "Deployment": Kind("Deployment", "apps/v1", _APPS, "deployment"),
    "StatefulSet": Kind("StatefulSet", "apps/v1", _APPS, "stateful_set"),
    "DaemonSet": Kind("DaemonSet", "apps/v1", _APPS, "daemon_set"),
    "ReplicaSet": Kind("ReplicaSet", "apps/v1", _APPS, "replica_set"),
    "Job": Kind("Job", "batch/v1", _BATCH, "job"),
    "CronJob": Kind("CronJob", "batch/v1", _BATCH, "cron_job"),
}
KINDS: tuple[Kind, ...] = (*NETWORK_KINDS, ENDPOINTS, *WORKLOAD_KINDS.values())
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class ClusterSource:
    """The cluster policygen reads: a kubeconfig path (its current context) or, when
    `in_cluster`, the pod's service account."""

    kubeconfig: str
    in_cluster: bool

    def read(self, workload: WorkloadId, *, network: bool = True) -> Cluster:
        """The objects for `workload`: with `network`, everything peers resolve against, and in
        any case the workload itself. A kind that cannot be listed raises ClusterError
        (FAILED_PRECONDITION) naming it: a policy from partial objects would be silently
        wrong (no kube-dns Service, for one, and DNS would be allowed too broadly)."""
        with api_client_from(self.kubeconfig or None, None, self.in_cluster) as api:
            snapshots = (
                [
                    list_objects(api, NETWORK_KINDS),
                    list_objects(api, (ENDPOINTS,), (API_SERVER_NAMESPACE,)),
                ]
                if network
                else []
            )
            kind = WORKLOAD_KINDS.get(workload.kind)
            if kind is not None and workload.namespace:
                snapshots.append(list_objects(api, (kind,), (workload.namespace,)))
        return _cluster(snapshots)


def _cluster(snapshots: list[Snapshot]) -> Cluster:
    errors = [error for snapshot in snapshots for error in snapshot.errors]
    if errors:
        where = snapshots[0].cluster
        raise ClusterError(
            f"Cannot read the objects policygen needs from {where}: {' '.join(errors)}"
        )
    cluster = Cluster()
    for snapshot in snapshots:
        for obj in snapshot.objects:
            cluster_parse.add(cluster, _as_authored(obj) if obj["kind"] == "NetworkPolicy" else obj)
    return cluster


def _as_authored(policy: dict[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy as its author wrote it, for the verification's diff: without the API
    server's bookkeeping (uid, resourceVersion, timestamps) or kubectl's last-applied copy."""
    meta = policy.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    kept = {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)}
    metadata = {**kept, **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": policy["apiVersion"], "kind": policy["kind"], "metadata": metadata,
            "spec": policy.get("spec") or {}}  # fmt: skip
