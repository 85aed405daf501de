"""An in-memory Kubernetes API server over real HTTP for tests: discovery, get, list with
`continue` pagination and selectors, and watch, in the JSON shapes the real apiserver sends.
Tests that exercise the official `kubernetes` client use it as `with KubeAPIServer() as kube`."""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import kubernetes.client
import yaml

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name), in the apiserver's etcd key order

# The kinds a 1.31 apiserver serves that posture or the corpus uses: "group/version Kind plural
# scope". Other kinds are registered on first add, from a loaded CRD when there is one.
_BUILTIN = """
v1 Pod pods N; v1 Service services N; v1 ServiceAccount serviceaccounts N
v1 ConfigMap configmaps N; v1 Secret secrets N; v1 Endpoints endpoints N
v1 ReplicationController replicationcontrollers N; v1 PersistentVolumeClaim persistentvolumeclaims N
v1 Event events N; v1 LimitRange limitranges N; v1 ResourceQuota resourcequotas N
v1 Namespace namespaces C; v1 Node nodes C; v1 PersistentVolume persistentvolumes C
apps/v1 Deployment deployments N; apps/v1 ReplicaSet replicasets N
apps/v1 DaemonSet daemonsets N; apps/v1 StatefulSet statefulsets N
apps/v1 ControllerRevision controllerrevisions N
batch/v1 Job jobs N; batch/v1 CronJob cronjobs N
autoscaling/v2 HorizontalPodAutoscaler horizontalpodautoscalers N
networking.k8s.io/v1 NetworkPolicy networkpolicies N; networking.k8s.io/v1 Ingress ingresses N
networking.k8s.io/v1 IngressClass ingressclasses C
rbac.authorization.k8s.io/v1 Role roles N; rbac.authorization.k8s.io/v1 RoleBinding rolebindings N
rbac.authorization.k8s.io/v1 ClusterRole clusterroles C
rbac.authorization.k8s.io/v1 ClusterRoleBinding clusterrolebindings C
policy/v1 PodDisruptionBudget poddisruptionbudgets N
storage.k8s.io/v1 StorageClass storageclasses C
scheduling.k8s.io/v1 PriorityClass priorityclasses C
apiextensions.k8s.io/v1 CustomResourceDefinition customresourcedefinitions C
admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration validatingwebhookconfigurations C
admissionregistration.k8s.io/v1 MutatingWebhookConfiguration mutatingwebhookconfigurations C
apiregistration.k8s.io/v1 APIService apiservices C
"""

# Field selectors the real apiserver accepts beyond metadata.name and metadata.namespace.
_FIELD_LABELS = {
    "pods": {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "secrets": {"type"},
    "namespaces": {"status.phase"},
}

_EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)
_ANONYMOUS_PATHS = {"/version", "/healthz", "/livez", "/readyz"}


@dataclass(frozen=True)
class Resource:
    """One served resource type, as discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.api_version}" if self.group else "/api/v1"

    @property
    def qualified(self) -> str:
        """The name RBAC messages use: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _builtin() -> tuple[Resource, ...]:
    rows = (row.split() for line in _BUILTIN.strip().splitlines() for row in line.split(";"))
    return tuple(
        Resource(*(gv.rpartition("/")[0], gv.rpartition("/")[2]), kind, plural, scope == "N")
        for gv, kind, plural, scope in rows
    )


BUILTIN_RESOURCES = _builtin()


@dataclass(frozen=True)
class Request:
    """One request the server received, for assertions on what a client really asked."""

    method: str
    path: str
    query: Mapping[str, str]


@dataclass(frozen=True)
class _Event:
    rv: int
    resource: Resource
    type: str
    old: JSON | None
    new: JSON  # for DELETED, the last state with the deletion's resourceVersion


@dataclass(frozen=True)
class _Scope:
    """What one watch selects: a resource, maybe a namespace, and its selectors."""

    resource: Resource
    namespace: str | None
    matches: Callable[[JSON | None], bool]

    def change(self, event: _Event) -> str | None:
        """The event this watcher sees: moving into or out of its selectors is ADDED or
        DELETED, as the real watch cache reports it."""
        in_namespace = self.namespace in (None, event.new["metadata"].get("namespace"))
        if event.resource != self.resource or not in_namespace:
            return None
        was, now = self.matches(event.old), self.matches(event.new)
        if event.type == "DELETED":
            return "DELETED" if was else None
        if was:
            return "MODIFIED" if now else "DELETED"
        return "ADDED" if now else None


class ApiError(Exception):
    """A failure the server answers with a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": extra.pop("metadata", {}),
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
            **extra,
        }


def _not_found(resource: Resource, name: str) -> ApiError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    details = {k: v for k, v in details.items() if v}
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found', details=details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _field(obj: JSON, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def field_selector(resource: Resource, text: str) -> Callable[[JSON], bool]:
    """Parses a fieldSelector (`a=b,c!=d`), rejecting fields the apiserver does not index."""
    terms: list[tuple[str, bool, str]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term)
        if match is None:
            raise _bad_request(f"invalid field selector: {term!r}")
        name, op, value = match.groups()
        if name not in {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get(
            resource.plural, set()
        ):
            raise _bad_request(f'field label not supported: "{name}"')
        terms.append((name, op != "!=", value))
    return lambda obj: all((_field(obj, n) == v) is eq for n, eq, v in terms)


_LABEL_TERM = re.compile(
    r"(?P<neg>!)?\s*(?P<key>[\w./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?"
)


def label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Parses a labelSelector: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`."""
    terms: list[tuple[str, str, frozenset[str]]] = []
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", text))):
        m = _LABEL_TERM.fullmatch(term)
        if m is None or (m["neg"] and (m["op"] or m["set"])):
            raise _bad_request(f"unable to parse requirement: {term!r}")
        values = frozenset(v.strip() for v in (m["values"] or m["value"] or "").split(","))
        op = "!" if m["neg"] else m["set"] or {"!=": "notin", None: "exists"}.get(m["op"], "in")
        terms.append((m["key"], op, values))
    return lambda labels: all(_satisfies(labels, *term) for term in terms)


def _satisfies(labels: Mapping[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op in ("exists", "!"):
        return (key in labels) is (op == "exists")
    return (labels.get(key) in values) is (op == "in")


class _ValueTagLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Safe loading that reads the YAML 1.1 `=` value tag (kube-prometheus has one) as text."""


_ValueTagLoader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


def _documents(text: str) -> Iterator[Any]:
    try:
        yield from list(yaml.load_all(text, Loader=_ValueTagLoader))
        return
    except yaml.YAMLError:
        pass
    for chunk in re.split(r"^---[ \t]*$", text, flags=re.MULTILINE):
        with contextlib.suppress(yaml.YAMLError):
            yield yaml.load(chunk, Loader=_ValueTagLoader)


def read_manifests(*paths: str | Path) -> list[JSON]:
    """Kubernetes objects in YAML files or directory trees, `*List` kinds expanded.

    Documents that do not parse, or are not objects with apiVersion, kind and a name, are
    skipped: the loader feeds a test server and is not what is under test."""
    files = sorted(
        f
        for p in map(Path, paths)
        for f in ([p] if p.is_file() else [*p.rglob("*.yaml"), *p.rglob("*.yml")])
    )
    objects: list[JSON] = []
    for file in files:
        for doc in _documents(file.read_text(encoding="utf-8", errors="replace")):
            if not isinstance(doc, dict):
                continue
            items = doc.get("items")
            if str(doc.get("kind", "")).endswith("List") and isinstance(items, list):
                items = [
                    {"apiVersion": doc.get("apiVersion"), **i} for i in items if isinstance(i, dict)
                ]
                objects.extend(filter(_is, items))
            elif _is(doc):
                objects.append(doc)
    return objects


def _is(doc: Any) -> bool:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    return (
        isinstance(meta, dict)
        and isinstance(doc.get("apiVersion"), str)
        and isinstance(doc.get("kind"), str)
        and isinstance(meta.get("name"), str)
        and bool(meta["name"])
    )


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in set("aeiou"):
        return lower[:-1] + "ies"
    return lower + "s"


class KubeAPIServer:
    """A threaded HTTP server on 127.0.0.1:0 that holds objects in memory and serves them.

    Every change gets the next resourceVersion, and history is kept (until `compact()`) so
    that paginated lists are consistent snapshots and watches replay from any version, like
    etcd. Legacy apiVersions of built-in kinds (`extensions/v1beta1` DaemonSet, `batch/v1beta1`
    CronJob) are served at the current version, as a real cluster's storage conversion does.
    Only GET (get, list, watch) is served; other methods get 501. Namespaces need not exist."""

    def __init__(self, *, token: str | None = None, watch_timeout: float = 30.0) -> None:
        self.token = token
        self.user = "system:serviceaccount:parallax:scanner"
        self.watch_timeout = watch_timeout
        self.on_request: Callable[[Request], None] | None = None
        self._cond = threading.Condition()
        self._rv = 1
        self._compacted = 0
        self._closing = False
        self._streams = 0  # open watch responses, which stop() lets finish
        self._history: dict[Resource, dict[Key, list[tuple[int, JSON | None]]]] = {}
        self._events_log: list[_Event] = []
        self._resources: dict[tuple[str, str], Resource] = {}
        self._custom: dict[tuple[str, str], tuple[str, bool]] = {}
        self._forbidden: set[tuple[str, str]] = set()
        self._requests: list[Request] = []
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        for resource in BUILTIN_RESOURCES:
            self._register(resource)

    # Lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> KubeAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._closing = False
        self._streams = 0
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.kube = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops serving: open watches end, idle keep-alive connections are shut down."""
        if self._httpd is None or self._thread is None:
            return
        with self._cond:
            self._closing = True  # ends watches; connections accepted from now shut themselves
            self._cond.notify_all()
            # Let open watches write their final chunk before their sockets are shut down, as
            # a real API server ends them; otherwise clients see a response cut short.
            self._cond.wait_for(lambda: self._streams == 0, timeout=10)
        self._httpd.shutdown()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=10)
        self._httpd = self._thread = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @contextlib.contextmanager
    def api_client(self, token: str | None = None) -> Iterator[kubernetes.client.ApiClient]:
        """A real client configured for this server (with `token`, default the server's)."""
        config = kubernetes.client.Configuration(host=self.url)
        if token or self.token:
            config.api_key = {"BearerToken": token or self.token or ""}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        with kubernetes.client.ApiClient(config) as client:
            try:
                yield client
            finally:
                client.rest_client.pool_manager.clear()  # close sockets now, not at GC

    # State -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def forbid(self, plural: str, group: str = "") -> None:
        """Answers 403 Forbidden to every request for this resource, as RBAC would."""
        self._forbidden.add((group, plural))

    def add(self, obj: Mapping[str, Any]) -> JSON:
        """Creates `obj`; raises ValueError if it exists. Returns the stored object."""
        return self._write(obj, exists=False)

    def update(self, obj: Mapping[str, Any]) -> JSON:
        """Replaces an existing object; raises KeyError if there is none."""
        return self._write(obj, exists=True)

    def apply(self, obj: Mapping[str, Any]) -> JSON:
        """Creates or replaces `obj`, like `kubectl apply` of a whole object."""
        return self._write(obj, exists=None)

    def delete(self, obj: Mapping[str, Any]) -> None:
        """Deletes the object with `obj`'s apiVersion, kind, namespace and name."""
        with self._cond:
            resource, key = self._locate(obj)
            versions = self._history.get(resource, {}).get(key)
            if not versions or versions[-1][1] is None:
                raise KeyError(f"{resource.kind} {key} does not exist")
            old = versions[-1][1]
            assert old is not None
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            versions.append((self._rv, None))
            self._events_log.append(_Event(self._rv, resource, "DELETED", old, gone))
            self._cond.notify_all()

    def load_yaml(self, *paths: str | Path) -> int:
        """Applies every object in the YAML files or trees (CRDs first); returns how many."""
        objects = read_manifests(*paths)
        objects.sort(key=lambda o: o["kind"] != "CustomResourceDefinition")
        for obj in objects:
            self.apply(obj)
        return len(objects)

    def compact(self) -> None:
        """Drops history, as etcd compaction does: older continue tokens and watches get 410."""
        with self._cond:
            self._compacted = self._rv
            for objects in self._history.values():
                for key, versions in list(objects.items()):
                    if versions[-1][1] is None:
                        del objects[key]
                    else:
                        del versions[:-1]
            self._events_log.clear()

    def _register(self, resource: Resource) -> Resource:
        self._resources.setdefault((resource.api_version, resource.plural), resource)
        self._history.setdefault(resource, {})
        return resource

    def _resolve(self, api_version: str, kind: str) -> Resource:
        group, _, version = api_version.rpartition("/")
        for res in BUILTIN_RESOURCES:
            if res.kind == kind and group in (res.group, "extensions"):
                return res
        for res in self._resources.values():
            if (res.group, res.version, res.kind) == (group, version, kind):
                return res
        plural, namespaced = self._custom.get((group, kind), (_plural(kind), True))
        return self._register(Resource(group, version, kind, plural, namespaced))

    def _locate(self, obj: Mapping[str, Any]) -> tuple[Resource, Key]:
        resource = self._resolve(str(obj["apiVersion"]), str(obj["kind"]))
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if resource.namespaced else ""
        return resource, (namespace, str(meta["name"]))

    def _write(self, obj: Mapping[str, Any], *, exists: bool | None) -> JSON:
        new: JSON = json.loads(json.dumps(obj, default=str))
        if not _is(new):
            raise ValueError("not a Kubernetes object: needs apiVersion, kind and metadata.name")
        with self._cond:
            resource, (namespace, name) = self._locate(new)
            versions = self._history[resource].setdefault((namespace, name), [])
            old = versions[-1][1] if versions else None
            if exists is False and old is not None:
                raise ValueError(f"{resource.qualified} {namespace}/{name} already exists")
            if exists is True and old is None:
                raise KeyError(f"{resource.qualified} {namespace}/{name} does not exist")
            self._rv += 1
            self._admit(new, resource, namespace, old)
            versions.append((self._rv, new))
            self._events_log.append(
                _Event(self._rv, resource, "MODIFIED" if old else "ADDED", old, new)
            )
            if resource.kind == "CustomResourceDefinition":
                names, spec = new.get("spec", {}).get("names", {}), new.get("spec", {})
                self._custom[(spec.get("group", ""), names.get("kind", ""))] = (
                    names.get("plural", ""),
                    spec.get("scope") != "Cluster",
                )
            self._cond.notify_all()
            return copy.deepcopy(new)

    def _admit(self, new: JSON, resource: Resource, namespace: str, old: JSON | None) -> None:
        """Fills what the apiserver sets on write: uid, resourceVersion, timestamps."""
        meta = new["metadata"]
        old_meta = old["metadata"] if old else {}
        new["apiVersion"] = resource.api_version
        meta.pop("namespace", None)
        if namespace:
            meta["namespace"] = namespace
        meta["uid"] = old_meta.get("uid") or str(uuid.uuid4())
        meta["resourceVersion"] = str(self._rv)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["creationTimestamp"] = old_meta.get("creationTimestamp") or stamp
        changed = old is None or old.get("spec") != new.get("spec")
        meta["generation"] = (
            old_meta.get("generation", 0) + 1 if changed else old_meta["generation"]
        )

    # Reads, called by the handler under no lock ------------------------------------------

    def _snapshot(
        self, resource: Resource, namespace: str | None, rv: int
    ) -> list[tuple[Key, JSON]]:
        out = []
        with self._cond:
            for key in sorted(self._history[resource], key="/".join):
                if namespace is not None and key[0] != namespace:
                    continue
                versions = self._history[resource][key]
                at = bisect.bisect_right(versions, rv, key=lambda v: v[0]) - 1
                if at >= 0 and versions[at][1] is not None:
                    out.append((key, cast(JSON, versions[at][1])))
        return out

    def _list(self, resource: Resource, namespace: str | None, query: Mapping[str, str]) -> JSON:
        labels = label_selector(query.get("labelSelector", ""))
        fields = field_selector(resource, query.get("fieldSelector", ""))
        limit = _int(query, "limit")
        with self._cond:
            rv, start = self._rv, ""
            if query.get("continue"):
                token_rv, start = _decode_continue(query["continue"])
                if 0 < token_rv < self._compacted:
                    again = _encode_continue(-1, start)
                    raise ApiError(410, "Expired", _EXPIRED_CONTINUE, metadata={"continue": again})
                rv = rv if token_rv == -1 else token_rv
        matched = [
            (key, obj)
            for key, obj in self._snapshot(resource, namespace, rv)
            if "/".join(key) > start and labels(obj["metadata"].get("labels") or {}) and fields(obj)
        ]
        page = matched[:limit] if limit > 0 else matched
        meta: JSON = {"resourceVersion": str(rv)}
        if len(page) < len(matched):
            meta["continue"] = _encode_continue(rv, "/".join(page[-1][0]))
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                meta["remainingItemCount"] = len(matched) - len(page)
        builtin = resource in BUILTIN_RESOURCES  # custom resources keep kind in list items
        items = [
            {k: v for k, v in obj.items() if not builtin or k not in ("apiVersion", "kind")}
            for _, obj in page
        ]
        kind, api_version = f"{resource.kind}List", resource.api_version
        return {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}

    def _get(self, resource: Resource, namespace: str | None, name: str) -> JSON:
        with self._cond:
            versions = self._history[resource].get((namespace or "", name))
            if not versions or versions[-1][1] is None:
                raise _not_found(resource, name)
            return {"kind": resource.kind, **versions[-1][1]}

    def _watch(
        self, resource: Resource, namespace: str | None, query: Mapping[str, str]
    ) -> Iterator[JSON]:
        """Validates a watch request, then returns its stream of events (see `_events`)."""
        labels = label_selector(query.get("labelSelector", ""))
        fields = field_selector(resource, query.get("fieldSelector", ""))
        timeout = min(
            float(_int(query, "timeoutSeconds") or self.watch_timeout), self.watch_timeout
        )
        since = query.get("resourceVersion", "")
        rv = 0 if since in ("", "0") else _int(query, "resourceVersion")

        def matches(obj: JSON | None) -> bool:
            return obj is not None and labels(obj["metadata"].get("labels") or {}) and fields(obj)

        scope = _Scope(resource, namespace, matches)
        return self._events(scope, rv, time.monotonic() + timeout)

    def _events(self, scope: _Scope, rv: int, deadline: float) -> Iterator[JSON]:
        """Yields events after resourceVersion `rv` (the current state first when `rv` is 0,
        as for an unset or "0" resourceVersion) until the deadline or shutdown."""
        resource = scope.resource
        with self._cond:
            if 0 < rv < self._compacted:
                message = f"too old resource version: {rv} ({self._compacted})"
                yield {"type": "ERROR", "object": ApiError(410, "Expired", message).status}
                return
            initial, rv = rv == 0, rv or self._rv
        if initial:
            for _, obj in self._snapshot(resource, scope.namespace, rv):
                if scope.matches(obj):
                    yield {"type": "ADDED", "object": {"kind": resource.kind, **obj}}

        def pending() -> bool:
            return self._closing or (bool(self._events_log) and self._events_log[-1].rv > rv)

        while True:
            with self._cond:
                if not self._cond.wait_for(pending, timeout=deadline - time.monotonic()):
                    return
                if self._closing:
                    return
                at = bisect.bisect_right(self._events_log, rv, key=lambda e: e.rv)
                events, rv = self._events_log[at:], self._events_log[-1].rv
            for event in events:
                change = scope.change(event)
                if change is not None:
                    yield {"type": change, "object": {"kind": resource.kind, **event.new}}

    # HTTP routing ------------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._cond:
            self._requests.append(request)
        if self.on_request is not None:
            self.on_request(request)

    def _authorize(self, path: str, authorization: str | None) -> None:
        if self.token is None or (authorization is None and path in _ANONYMOUS_PATHS):
            return
        if authorization != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _check_forbidden(self, resource: Resource, verb: str, namespace: str | None) -> None:
        if (resource.group, resource.plural) not in self._forbidden:
            return
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = (
            f'{resource.qualified} is forbidden: User "{self.user}" cannot {verb} resource '
            f'"{resource.plural}" in API group "{resource.group}" {scope}'
        )
        details = {"group": resource.group, "kind": resource.plural}
        raise ApiError(403, "Forbidden", message, details={k: v for k, v in details.items() if v})

    def _discovery(self, path: str) -> JSON | None:
        if path == "/version":
            return {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0",
                "gitTreeState": "clean",
                "gitCommit": "9edcffcde5595e8a5b1a35f88c421764e575afce",
                "buildDate": "2024-08-13T07:28:49Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/healthz":
            return {"status": "ok"}
        groups = self._groups()
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            }
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(groups.values())}
        served = {r.prefix: r.api_version for r in self._resources_snapshot()}
        if path in served:
            resources = [
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "list", "watch"],
                }
                for r in self._resources_snapshot()
                if r.prefix == path
            ]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": served[path],
                "resources": resources,
            }
        group = groups.get(path.removeprefix("/apis/")) if path.startswith("/apis/") else None
        return {"kind": "APIGroup", "apiVersion": "v1", **group} if group else None

    def _resources_snapshot(self) -> list[Resource]:
        with self._cond:
            return list(self._resources.values())

    def _groups(self) -> dict[str, JSON]:
        groups: dict[str, JSON] = {}
        for r in self._resources_snapshot():
            if not r.group:
                continue
            entry = groups.setdefault(r.group, {"name": r.group, "versions": []})
            version = {"groupVersion": r.api_version, "version": r.version}
            if version not in entry["versions"]:
                entry["versions"].append(version)
            entry.setdefault("preferredVersion", version)
        return groups

    def _route(self, path: str, query: Mapping[str, str]) -> JSON | Iterator[JSON]:
        body = self._discovery(path.rstrip("/") or "/")
        if body is not None:
            return body
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            api_version, rest = "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        with self._cond:
            resource = self._resources.get((api_version, rest[0]))
        if resource is None or len(rest) > 2 or (namespace and not resource.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(rest) == 2:
            self._check_forbidden(resource, "get", namespace)
            return self._get(resource, namespace, rest[1])
        watching = query.get("watch") in ("1", "true")
        self._check_forbidden(resource, "watch" if watching else "list", namespace)
        return (self._watch if watching else self._list)(resource, namespace, query)


def _int(query: Mapping[str, str], name: str) -> int:
    try:
        return int(query.get(name) or 0)
    except ValueError:
        raise _bad_request(f"invalid {name}: {query[name]!r}") from None


def _encode_continue(rv: int, start: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        if decoded["v"] != "meta.k8s.io/v1" or not isinstance(decoded["rv"], int):
            raise ValueError("unsupported continue version or resource version")
        return decoded["rv"], str(decoded["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad_request(f"invalid continue token: {exc}") from None


class _HTTPServer(ThreadingHTTPServer):
    kube: KubeAPIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # As Go's net/http does: without it, headers and body in two writes wait on delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.kube._cond:
            self.server.kube._connections.add(self.connection)
            if self.server.kube._closing:
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self.server.kube._cond:
            self.server.kube._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: tests read `KubeAPIServer.requests` instead."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        kube = self.server.kube
        kube._record(Request("GET", url.path, query))
        try:
            kube._authorize(url.path, self.headers.get("Authorization"))
            body = kube._route(url.path, query)
        except ApiError as exc:
            self._send(int(exc.status["code"]), exc.status)
            return
        except Exception as exc:  # a bug in this server: say so instead of dropping the socket
            self._send(500, ApiError(500, "InternalError", repr(exc)).status)
            raise
        if isinstance(body, dict):
            self._send(200, body)
        else:
            self._stream(body)

    def _send(self, code: int, body: JSON) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterable[JSON]) -> None:
        kube = self.server.kube
        with kube._cond:
            kube._streams += 1
        try:
            self._write_stream(events)
        finally:
            with kube._cond:
                kube._streams -= 1
                kube._cond.notify_all()

    def _write_stream(self, events: Iterable[JSON]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away: nothing left to tell it
            self.close_connection = True
