"""Pod metadata from the API server with the official `kubernetes` client: lists the pods of
this node (fieldSelector spec.nodeName, paged with `continue`), then watches from the list's
resourceVersion and relists on 410 Gone; resolves owners ReplicaSet→Deployment and
Job→CronJob. Feeds the PodIndex the attributor reads. Requests go through servicekit.kube's
RawGet: the client's ApiClient without its typed API classes (28 MB and 0.2 s to import)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, ApiException

from agent.attribution.pods import PodIndex, pod_from
from servicekit.kube import RawGet, api_client_from

log = logging.getLogger(__name__)
Watch: Any = kubernetes.watch.Watch  # untyped modules; kept at arm's length from mypy
_PARENTS = {"ReplicaSet": "Deployment", "Job": "CronJob"}
_PATHS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
}


class Owners:
    """The controller of a ReplicaSet or Job, read once per object and cached."""

    def __init__(self, api: ApiClient, timeout: float) -> None:
        self._api, self._timeout = api, timeout
        self._cache: dict[tuple[str, str, str], tuple[str, str] | None] = {}

    def __call__(self, namespace: str, kind: str, name: str) -> tuple[str, str] | None:
        key = (namespace, kind, name)
        if key not in self._cache:
            self._cache[key] = self._read(namespace, kind, name)
        return self._cache[key]

    def _read(self, namespace: str, kind: str, name: str) -> tuple[str, str] | None:
        read = RawGet(self._api, _PATHS[kind].format(namespace=namespace, name=name))
        try:
            response = read(_request_timeout=self._timeout)
        except ApiException as exc:  # forbidden or gone: the ReplicaSet or Job is the workload
            log.info(
                "%s %s/%s unreadable (%s): it is the workload", kind, namespace, name, exc.status
            )
            return None
        refs = json.loads(response.data)["metadata"].get("ownerReferences") or []
        parents = [r for r in refs if r.get("controller") and r.get("kind") == _PARENTS[kind]]
        return (parents[0]["kind"], parents[0]["name"]) if parents else None


class PodWatcher:
    """A thread keeping `index` equal to the API server's pods on `node_name`."""

    def __init__(
        self,
        api: ApiClient,
        node_name: str,
        index: PodIndex,
        *,
        page_size: int = 500,
        watch_seconds: int = 300,
        timeout: float = 30.0,
    ) -> None:
        self._api, self._pods = api, RawGet(api, "/api/v1/pods")
        self._selector = f"spec.nodeName={node_name}"
        self._index, self._owners = index, Owners(api, timeout)
        self._page_size, self._watch_seconds, self._timeout = page_size, watch_seconds, timeout
        self._stopping = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="pod-watcher", daemon=True)
        self.synced = threading.Event()

    def start(self) -> None:
        """List, then watch, in the background until `stop()`."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the watch and close the client's connections."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()
        self._api.rest_client.pool_manager.clear()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._watch_from(self._list())
                delay = 0.5
            except Exception as exc:  # any failure: keep what is known, back off, relist
                if self._stopping.is_set():
                    return
                log.warning("pod list/watch failed, retrying in %.1fs: %s", delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)

    def _list(self) -> str:
        seen: set[str] = set()
        token: str | None = None
        while True:
            response = self._pods(
                field_selector=self._selector,
                limit=self._page_size,
                _continue=token,
                _request_timeout=self._timeout,
            )
            body = json.loads(response.data)
            for obj in body["items"]:
                self._index.put(pod_from(obj, self._owners))
                seen.add(obj["metadata"]["uid"])
            token = body["metadata"].get("continue")
            if not token:
                break
        self._index.retain(seen)
        self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    def _watch_from(self, version: str) -> None:
        while not self._stopping.is_set():
            self._watch = Watch()
            for event in self._watch.stream(
                self._pods,
                field_selector=self._selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_seconds,
                _request_timeout=(self._timeout, self._watch_seconds + self._timeout),
                deserialize=False,
            ):
                obj = event["object"]
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] == "DELETED":
                    self._index.delete(obj["metadata"]["uid"])
                elif event["type"] in ("ADDED", "MODIFIED"):
                    self._index.put(pod_from(obj, self._owners))


def api_client(mode: str, kubeconfig: str) -> ApiClient | None:
    """A client for the agent's access mode ("in-cluster", "kubeconfig"); None for "off"."""
    if mode == "off":
        return None
    return api_client_from(kubeconfig or None, None, in_cluster=mode == "in-cluster")
