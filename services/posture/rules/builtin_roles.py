"""Built-in ClusterRoles of a Kubernetes cluster, as data, so bindings to them can be judged.

Condensed from the API server's RBAC bootstrap policy (aggregated roles already expanded);
`rbac.py` consults this table when a binding names a ClusterRole that is not in the scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RuleSpec = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
_READ = ("get", "list", "watch")
_WRITE = ("create", "delete", "deletecollection", "patch", "update")
_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

_VIEW: tuple[RuleSpec, ...] = (
    (("",), ("configmaps", "endpoints", "persistentvolumeclaims", "pods", "replicationcontrollers",
             "serviceaccounts", "services", "events", "limitranges", "pods/log", "pods/status",
             "resourcequotas", "namespaces", "bindings"), _READ),
    (("apps",), ("controllerrevisions", "daemonsets", "deployments", "replicasets",
                 "statefulsets"), _READ),
    (("autoscaling",), ("horizontalpodautoscalers",), _READ),
    (("batch",), ("cronjobs", "jobs"), _READ),
    (("policy",), ("poddisruptionbudgets",), _READ),
    (("networking.k8s.io",), ("ingresses", "networkpolicies"), _READ),
    (("discovery.k8s.io",), ("endpointslices",), _READ),
)  # fmt: skip
_EDIT: tuple[RuleSpec, ...] = (
    (("",), ("pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
             "services/proxy"), _READ),
    (("",), ("serviceaccounts",), ("impersonate",)),
    (("",), ("pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"), _WRITE),
    (("",), ("pods/eviction", "serviceaccounts/token"), ("create",)),
    (("",), ("configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
             "secrets", "serviceaccounts", "services", "services/proxy"), _WRITE),
    (("apps",), ("daemonsets", "deployments", "replicasets", "statefulsets"), _WRITE),
    (("autoscaling",), ("horizontalpodautoscalers",), _WRITE),
    (("batch",), ("cronjobs", "jobs"), _WRITE),
    (("policy",), ("poddisruptionbudgets",), _WRITE),
    (("networking.k8s.io",), ("ingresses", "networkpolicies"), _WRITE),
    (("coordination.k8s.io",), ("leases",), _ALL),
    *_VIEW,
)  # fmt: skip
_ADMIN: tuple[RuleSpec, ...] = (
    (("authorization.k8s.io",), ("localsubjectaccessreviews",), ("create",)),
    (("rbac.authorization.k8s.io",), ("rolebindings", "roles"), _ALL),
    *_EDIT,
)
_SPECS: Mapping[str, tuple[RuleSpec, ...]] = {
    "cluster-admin": ((("*",), ("*",), ("*",)),),
    "admin": _ADMIN,
    "edit": _EDIT,
    "view": _VIEW,
    "system:aggregate-to-view": _VIEW,
    "system:kube-controller-manager": (
        (("",), ("secrets", "serviceaccounts"), ("create", "get", "update")),
        (("",), ("secrets",), ("delete",)),
        (("",), ("serviceaccounts/token",), ("create",)),
        (("*",), ("*",), ("list", "watch")),
    ),
    "system:kube-scheduler": (
        (("",), ("pods",), ("delete", "get", "list", "watch")),
        (("",), ("bindings", "pods/binding"), ("create",)),
        (("",), ("nodes", "persistentvolumes", "persistentvolumeclaims", "services"), _READ),
    ),
    "system:node": (
        (("",), ("secrets", "configmaps", "persistentvolumeclaims", "persistentvolumes"),
         ("get", "list", "watch")),
        (("",), ("pods",), ("create", "delete", "get", "list", "watch")),
        (("",), ("nodes", "nodes/status", "pods/status"), ("create", "get", "patch", "update")),
        (("",), ("serviceaccounts/token",), ("create",)),
        (("certificates.k8s.io",), ("certificatesigningrequests",), ("create", "get", "list")),
    ),
    "system:node-proxier": ((("",), ("endpoints", "nodes", "services"), _READ),),
    "system:persistent-volume-provisioner": (
        (("",), ("persistentvolumes",), ("create", "delete", "get", "list", "watch")),
    ),
    "system:heapster": ((("",), ("events", "namespaces", "nodes", "pods"), _READ),),
    "system:kube-dns": ((("",), ("endpoints", "services"), ("list", "watch")),),
    "system:auth-delegator": (
        (("authentication.k8s.io",), ("tokenreviews",), ("create",)),
        (("authorization.k8s.io",), ("subjectaccessreviews",), ("create",)),
    ),
    "system:basic-user": (
        (("authorization.k8s.io",), ("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
         ("create",)),
    ),
    "system:discovery": (),
    "system:public-info-viewer": (),
    "system:monitoring": (),
    "system:controller:clusterrole-aggregation-controller": ((("*",), ("*",), ("*",)),),
    "system:controller:generic-garbage-collector": ((("*",), ("*",), ("delete", "get", "list",
                                                                     "patch", "update",
                                                                     "watch")),),
    "system:controller:namespace-controller": ((("*",), ("*",), ("delete", "deletecollection",
                                                                "get", "list")),),
}  # fmt: skip


def _rule(spec: RuleSpec) -> Mapping[str, Any]:
    groups, resources, verbs = spec
    return {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}


BUILTIN_CLUSTER_ROLES: Mapping[str, tuple[Mapping[str, Any], ...]] = {
    name: tuple(_rule(spec) for spec in specs) for name, specs in _SPECS.items()
}
