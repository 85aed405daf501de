"""Live-cluster input of posture: lists the kinds posture judges from a running cluster through
the official `kubernetes` client, as manifest-shaped dicts. Called by `livecluster` (the CLI's
`--cluster` and the service's cluster scans); findings are then computed as for files."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client import ApiClient

from servicekit.errors import FailedPrecondition

JSON = dict[str, Any]

DEFAULT_PAGE_SIZE = 500
REQUEST_TIMEOUT = (10.0, 60.0)  # seconds: connect, then read of one page


@dataclass(frozen=True)
class ClusterSnapshot:
    """What one listing of a cluster found: objects with apiVersion and kind filled in, one
    sentence per kind (or kind in a namespace) that could not be listed, and the API server's
    address."""

    objects: list[JSON]
    errors: list[str]
    cluster: str


class ClusterError(FailedPrecondition):
    """The cluster cannot be used at all: no usable configuration, no answer, or credentials
    it rejects."""


@dataclass(frozen=True)
class _Kind:
    """A listed kind: `method` is the client's stem, as in `list_namespaced_<method>`."""

    kind: str
    api_version: str
    api: Callable[[ApiClient], Any]
    method: str
    namespaced: bool = True


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
KINDS: tuple[_Kind, ...] = (
    _Kind("Namespace", "v1", _CORE, "namespace", namespaced=False),
    _Kind("Pod", "v1", _CORE, "pod"),
    _Kind("ReplicationController", "v1", _CORE, "replication_controller"),
    _Kind("Service", "v1", _CORE, "service"),
    _Kind("ServiceAccount", "v1", _CORE, "service_account"),
    _Kind("Deployment", "apps/v1", _APPS, "deployment"),
    _Kind("ReplicaSet", "apps/v1", _APPS, "replica_set"),
    _Kind("DaemonSet", "apps/v1", _APPS, "daemon_set"),
    _Kind("StatefulSet", "apps/v1", _APPS, "stateful_set"),
    _Kind("Job", "batch/v1", _BATCH, "job"),
    _Kind("CronJob", "batch/v1", _BATCH, "cron_job"),
    _Kind("Ingress", "networking.k8s.io/v1", _NET, "ingress"),
    _Kind("NetworkPolicy", "networking.k8s.io/v1", _NET, "network_policy"),
    _Kind("Role", "rbac.authorization.k8s.io/v1", _RBAC, "role"),
    _Kind("RoleBinding", "rbac.authorization.k8s.io/v1", _RBAC, "role_binding"),
    _Kind("ClusterRole", "rbac.authorization.k8s.io/v1", _RBAC, "cluster_role", False),
    _Kind(
        "ClusterRoleBinding", "rbac.authorization.k8s.io/v1", _RBAC, "cluster_role_binding", False
    ),
    _Kind(
        "PodDisruptionBudget", "policy/v1", kubernetes.client.PolicyV1Api, "pod_disruption_budget"
    ),
)


# The config loaders are untyped; these names give them the signatures used here.
_load_incluster: Callable[..., None] = kubernetes.config.load_incluster_config
_load_kubeconfig: Callable[..., None] = kubernetes.config.load_kube_config


def api_client_from(kubeconfig: str | None, context: str | None, in_cluster: bool) -> ApiClient:
    """A client for the cluster of a kubeconfig context (the current one when `context` is None,
    the default search path when `kubeconfig` is None), or for the pod's service account when
    `in_cluster` (which then wins over the other two). Raises ClusterError when unusable."""
    configuration = kubernetes.client.Configuration()
    try:
        if in_cluster:
            _load_incluster(client_configuration=configuration)
        else:
            # persist_config=False: a scan must never rewrite the user's kubeconfig.
            _load_kubeconfig(
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (kubernetes.config.ConfigException, OSError) as exc:
        where = "in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or ''}"
        raise ClusterError(f"Cannot configure a cluster client from the {where}: {exc}") from exc
    return ApiClient(configuration)


def list_cluster_objects(
    api: ApiClient,
    *,
    namespaces: Sequence[str] = (),
    page_size: int = DEFAULT_PAGE_SIZE,
) -> ClusterSnapshot:
    """Lists every kind in KINDS across all namespaces (or only `namespaces`; cluster-scoped
    RBAC is always listed whole, since it grants rights inside them), `page_size` objects per
    request with `continue` pagination. A kind that cannot be listed (403 forbidden, not
    served) becomes one sentence in `errors` and the scan goes on; a cluster that does not
    answer, or rejects the credentials, raises ClusterError."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    host = str(api.configuration.host)
    objects: list[JSON] = []
    errors: list[str] = []
    for kind in KINDS:
        for namespace, fetch in _requests(api, kind, namespaces):
            where = f"in namespace {namespace}" if namespace else "across the cluster"
            try:
                objects.extend(_manifest(kind, item) for item in fetch(page_size))
            except kubernetes.client.ApiException as exc:
                if exc.status == 401:  # every other kind would fail the same way
                    raise ClusterError(
                        f"The API server at {host} rejected the credentials: {_why(exc)}"
                    ) from exc
                errors.append(f"Cannot list {kind.kind} ({kind.api_version}) {where}: {_why(exc)}.")
            except urllib3.exceptions.HTTPError as exc:
                raise ClusterError(
                    f"The Kubernetes API server at {host} did not answer: {exc}"
                ) from exc
    return ClusterSnapshot(objects=objects, errors=errors, cluster=host)


_Fetch = Callable[[int], list[JSON]]


def _requests(
    api: ApiClient, kind: _Kind, namespaces: Sequence[str]
) -> Iterator[tuple[str, _Fetch]]:
    """The listings that cover `kind`: one cluster-wide, or one per requested namespace."""
    client = kind.api(api)
    if not namespaces or (not kind.namespaced and kind.kind != "Namespace"):
        method = f"list_{kind.method}" + ("_for_all_namespaces" if kind.namespaced else "")
        yield "", functools.partial(_paginate, getattr(client, method), ())
        return
    for namespace in dict.fromkeys(namespaces):
        if kind.kind == "Namespace":  # a grant inside the namespace allows get, not list
            yield namespace, functools.partial(_get, client.read_namespace, (namespace,))
        else:
            method = getattr(client, f"list_namespaced_{kind.method}")
            yield namespace, functools.partial(_paginate, method, (namespace,))


def _get(method: Callable[..., Any], args: tuple[str, ...], _page_size: int) -> list[JSON]:
    return [_read(method, *args)]


def _paginate(method: Callable[..., Any], args: tuple[str, ...], page_size: int) -> list[JSON]:
    """All items of a list call, page by page. If the continue token expires mid-way (410
    Gone: the API server compacted its history) the list restarts once, whole, so the result
    stays one consistent snapshot."""
    for attempt in (1, 2):
        items: list[JSON] = []
        token: str | None = None
        try:
            while True:
                page = _read(method, *args, limit=page_size, _continue=token)
                items.extend(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    return items
        except kubernetes.client.ApiException as exc:
            if exc.status != 410 or token is None or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _read(method: Callable[..., Any], *args: str, **params: Any) -> JSON:
    """One call's raw JSON body: faster than the client's models and exactly what was served."""
    response = method(*args, **params, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
    try:
        body = json.loads(response.data)
    except ValueError:
        body = None
    finally:
        response.release_conn()
    if not isinstance(body, dict):
        reason = "the response is not a JSON object"
        raise kubernetes.client.ApiException(status=response.status, reason=reason)
    return body


def _manifest(kind: _Kind, item: JSON) -> JSON:
    """An item as a manifest has it: apiVersion and kind first (list items omit them), without
    managedFields (server bookkeeping, often most of the object, judged by no control)."""
    metadata = item.get("metadata")
    if isinstance(metadata, dict):
        item["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return {"apiVersion": kind.api_version, "kind": kind.kind, **item}


def _why(exc: kubernetes.client.ApiException) -> str:
    """The API server's own message (a Status body) with the HTTP status, e.g. 'HTTP 403
    Forbidden: deployments.apps is forbidden: User "x" cannot list ...'."""
    try:
        status = json.loads(exc.body or "")
        message = status.get("message") if isinstance(status, dict) else None
    except ValueError:
        message = None
    return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
