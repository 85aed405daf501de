"""Live-cluster input of posture: the kinds posture judges and their listing through
`servicekit.kube`, as manifest-shaped dicts. Called by `livecluster` (the CLI's `--cluster` and
the service's cluster scans); findings are then computed as for files."""

from __future__ import annotations

from collections.abc import Sequence

import kubernetes.client
from kubernetes.client import ApiClient

from servicekit.kube import (
    DEFAULT_PAGE_SIZE,
    ClusterError,
    Kind,
    Snapshot,
    api_client_from,
    list_objects,
)

__all__ = ["KINDS", "ClusterError", "api_client_from", "list_cluster_objects"]

_CORE, _APPS, _BATCH = (
    kubernetes.client.CoreV1Api,
    kubernetes.client.AppsV1Api,
    kubernetes.client.BatchV1Api,
)
_NET, _RBAC = kubernetes.client.NetworkingV1Api, kubernetes.client.RbacAuthorizationV1Api

# Secret is deliberately absent: a Secret list returns every secret value in the namespace, and
# posture must never fetch or hold them (a leaked scan result would leak credentials). ConfigMap
# is absent too: no control reads one. ReplicaSets and Pods owned by controllers are all kept;
# the caller decides whether to judge an object or its owner.
KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "v1", _CORE, "namespace", namespaced=False),
    Kind("Pod", "v1", _CORE, "pod"),
    Kind("ReplicationController", "v1", _CORE, "replication_controller"),
    Kind("Service", "v1", _CORE, "service"),
    Kind("ServiceAccount", "v1", _CORE, "service_account"),
    Kind("Deployment", "apps/v1", _APPS, "deployment"),
    Kind("ReplicaSet", "apps/v1", _APPS, "replica_set"),
    Kind("DaemonSet", "apps/v1", _APPS, "daemon_set"),
    Kind("StatefulSet", "apps/v1", _APPS, "stateful_set"),
    Kind("Job", "batch/v1", _BATCH, "job"),
    Kind("CronJob", "batch/v1", _BATCH, "cron_job"),
    Kind("Ingress", "networking.k8s.io/v1", _NET, "ingress"),
    Kind("NetworkPolicy", "networking.k8s.io/v1", _NET, "network_policy"),
    Kind("Role", "rbac.authorization.k8s.io/v1", _RBAC, "role"),
    Kind("RoleBinding", "rbac.authorization.k8s.io/v1", _RBAC, "role_binding"),
    Kind("ClusterRole", "rbac.authorization.k8s.io/v1", _RBAC, "cluster_role", False),
    Kind(
        "ClusterRoleBinding", "rbac.authorization.k8s.io/v1", _RBAC, "cluster_role_binding", False
    ),
    Kind(
        "PodDisruptionBudget", "policy/v1", kubernetes.client.PolicyV1Api, "pod_disruption_budget"
    ),
)


def list_cluster_objects(
    api: ApiClient,
    *,
    namespaces: Sequence[str] = (),
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Snapshot:
    """Lists every kind in KINDS across all namespaces (or only `namespaces`; cluster-scoped
    RBAC is always listed whole, since it grants rights inside them). A kind that cannot be
    listed becomes one sentence in `errors` and the scan goes on; a cluster that does not
    answer, or rejects the credentials, raises ClusterError."""
    return list_objects(api, KINDS, namespaces, page_size)
