"""Reading a Kubernetes cluster through the official `kubernetes` client: a client from a
kubeconfig or the pod's service account, and paginated listing of the kinds a caller names, as
manifest-shaped dicts. Shared by the services that read live clusters (posture, policygen); each
passes its own table of kinds. `read_pod` gets one pod, for the runtime's agent-node check, and
`RawGet` serves the agent's pod list and watch: both without the client's typed API classes."""

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

__all__ = [
    "ClusterError",
    "Kind",
    "RawGet",
    "Snapshot",
    "api_client_from",
    "list_objects",
    "read_pod",
]

JSON = dict[str, Any]

DEFAULT_PAGE_SIZE = 500
REQUEST_TIMEOUT = (10.0, 60.0)  # seconds: connect, then read of one page
# Seconds to connect, then to read, for one object read while a caller waits on it.
GET_TIMEOUT = (3.0, 5.0)


@dataclass(frozen=True)
class Snapshot:
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
class Kind:
    """A listable kind: `api` builds the client's API group object from an ApiClient, and
    `method` is its stem, as in `list_namespaced_<method>` (`pod`, `network_policy`)."""

    kind: str
    api_version: str
    api: Callable[[ApiClient], Any]
    method: str
    namespaced: bool = True


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
            # persist_config=False: reading a cluster must never rewrite the user's kubeconfig.
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


def list_objects(
    api: ApiClient,
    kinds: Sequence[Kind],
    namespaces: Sequence[str] = (),
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Snapshot:
    """Lists every kind in `kinds` across all namespaces (or only `namespaces`: namespaced kinds
    are listed in each, a Namespace is read by name, other cluster-scoped kinds are listed
    whole), `page_size` objects per request with `continue` pagination. A kind that cannot be
    listed (403 forbidden, not served) becomes one sentence in `errors` and the listing goes
    on; a cluster that does not answer, or rejects the credentials, raises ClusterError."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    host = str(api.configuration.host)
    objects: list[JSON] = []
    errors: list[str] = []
    for kind in kinds:
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
    return Snapshot(objects=objects, errors=errors, cluster=host)


_Fetch = Callable[[int], list[JSON]]


def _requests(
    api: ApiClient, kind: Kind, namespaces: Sequence[str]
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
    body = _body(response)
    if body is None:
        reason = "the response is not a JSON object"
        raise kubernetes.client.ApiException(status=response.status, reason=reason)
    return body


def _body(response: Any) -> JSON | None:
    """A raw response's JSON object (None when it is not one); the connection goes back to
    the pool either way."""
    try:
        body = json.loads(response.data)
    except ValueError:
        return None
    finally:
        response.release_conn()
    return body if isinstance(body, dict) else None


def _manifest(kind: Kind, item: JSON) -> JSON:
    """An item as a manifest has it: apiVersion and kind first (list items omit them), without
    managedFields (server bookkeeping, often most of the object, read by no caller)."""
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


# Keyword arguments as the typed API classes (and kubernetes.watch) name them -> query names.
_QUERY = {
    "_continue": "continue",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "field_selector": "fieldSelector",
    "limit": "limit",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}


class RawGet:
    """GET `path` with query arguments named as the typed API methods name them, returning the
    unread urllib3 response (as `_preload_content=False` does), so kubernetes.watch can stream
    it; a status outside 2xx raises ApiException with the server's body."""

    def __init__(self, api: ApiClient, path: str) -> None:
        self._api, self._path = api, path

    def __call__(self, *, _request_timeout: Any = None, **query: Any) -> Any:
        query.pop("_preload_content", None)  # always raw
        params = [(_QUERY[k], _text(v)) for k, v in query.items() if v is not None]
        api: Any = self._api
        _, url, headers, _, _ = api.param_serialize(
            "GET",
            self._path,
            query_params=params,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = api.call_api(
            "GET", url, header_params=headers, _request_timeout=_request_timeout
        )
        if not 200 <= response.status < 300:
            body = response.read()
            raise kubernetes.client.ApiException(
                status=response.status, reason=response.reason, body=body.decode(errors="replace")
            )
        return response.response


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def read_pod(
    api: ApiClient,
    namespace: str,
    name: str,
    timeout: tuple[float, float] = GET_TIMEOUT,
) -> JSON | None:
    """One pod as the API server serves it, or None when there is no such pod (404). Raises
    ClusterError when the API server does not answer or refuses the read (401, 403, 5xx):
    the caller cannot tell then whether the pod exists."""
    host = str(api.configuration.host)
    try:
        response = RawGet(api, f"/api/v1/namespaces/{namespace}/pods/{name}")(
            _request_timeout=timeout
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise ClusterError(f"Cannot read pod {namespace}/{name} from {host}: {_why(exc)}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise ClusterError(f"The Kubernetes API server at {host} did not answer: {exc}") from exc
    body = _body(response)
    if body is None:
        raise ClusterError(f"The API server at {host} sent pod {namespace}/{name} as no object")
    return body
