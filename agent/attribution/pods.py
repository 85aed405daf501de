"""What the agent knows about pods: pod objects (API server JSON) reduced to the fields
attribution needs, an index by pod UID shared between the API watcher and the attributor,
and the registry files `parallax run` writes for local pods."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parallax.runtime.v1 import event_pb2

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
_SPEC_LISTS = ("containers", "initContainers", "ephemeralContainers")
_LOCAL = uuid.UUID("5f1c1f3e-6a53-4c1b-9d0e-7a6c0d2b8e41")  # namespace of local pod UIDs

# Given (namespace, kind, name) of an owner, return its own controller's (kind, name) or None.
OwnerLookup = Callable[[str, str, str], tuple[str, str] | None]


@dataclass(frozen=True)
class Container:
    """One running container of a pod, by its runtime ID."""

    name: str
    image: str
    image_digest: str


@dataclass(frozen=True)
class Pod:
    """A pod as attribution sees it: identity, owning workload and containers by runtime ID."""

    uid: str
    namespace: str
    name: str
    kind: str
    workload: str
    labels: Mapping[str, str] = field(default_factory=dict)
    containers: Mapping[str, Container] = field(default_factory=dict)
    mirror_uid: str = ""

    def attribution(self, container_id: str) -> event_pb2.Attribution | None:
        """The attribution of events in `container_id`; None when the pod has no such one."""
        container = self.containers.get(container_id)
        if container is None:
            return None
        result = event_pb2.Attribution(
            pod_uid=self.uid,
            container_id=container_id,
            image=container.image,
            image_digest=container.image_digest,
        )
        ref = result.workload
        ref.namespace, ref.kind, ref.name = self.namespace, self.kind, self.workload
        ref.pod, ref.container = self.name, container.name
        return result


def _digest(image_id: str) -> str:
    digest = image_id.rpartition("@")[2]
    return digest if digest.startswith("sha256:") else ""


def _workload(meta: Mapping[str, Any], owners: OwnerLookup) -> tuple[str, str]:
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is None or ref.get("kind") == "Node":  # bare and static pods are their own workload
        return "Pod", str(meta["name"])
    kind, name = str(ref["kind"]), str(ref["name"])
    if kind in ("ReplicaSet", "Job"):
        return owners(str(meta.get("namespace", "")), kind, name) or (kind, name)
    return kind, name


def pod_from(obj: Mapping[str, Any], owners: OwnerLookup) -> Pod:
    """Reduce a pod object as the API server sends it; owners resolves ReplicaSet→Deployment
    and Job→CronJob."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    images = {c["name"]: c.get("image", "") for key in _SPEC_LISTS for c in spec.get(key) or []}
    containers = {
        s["containerID"].partition("://")[2]: Container(
            s["name"], images.get(s["name"]) or s.get("image", ""), _digest(s.get("imageID", ""))
        )
        for key in _STATUS_LISTS
        for s in status.get(key) or []
        if s.get("containerID")
    }
    kind, workload = _workload(meta, owners)
    mirror = (meta.get("annotations") or {}).get(MIRROR_ANNOTATION, "")
    labels = dict(meta.get("labels") or {})
    uid, namespace, name = str(meta["uid"]), str(meta.get("namespace", "")), str(meta["name"])
    return Pod(uid, namespace, name, kind, workload, labels, containers, mirror)


class PodIndex:
    """Pods by UID (and static pods by their mirror hash), written by one watcher thread and
    read by the attributor. Deleted pods stay `linger` seconds for their late events."""

    def __init__(self, linger: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._pods: dict[str, Pod] = {}
        self._deleted: dict[str, float] = {}
        self._linger, self._clock = linger, clock
        self._changed = threading.Condition()
        self.generation = 0

    def put(self, pod: Pod) -> None:
        """Add or replace a pod."""
        with self._changed:
            self._pods[pod.uid] = pod
            if pod.mirror_uid:
                self._pods[pod.mirror_uid] = pod
            self._deleted.pop(pod.uid, None)
            self._bump()

    def delete(self, uid: str) -> None:
        """Mark a pod deleted; it is forgotten `linger` seconds later."""
        with self._changed:
            self._deleted[uid] = self._clock() + self._linger
            self._bump()

    def retain(self, uids: set[str]) -> None:
        """Mark deleted every pod not in `uids` (after a relist)."""
        with self._changed:
            for uid in {p.uid for p in self._pods.values()} - uids - set(self._deleted):
                self._deleted[uid] = self._clock() + self._linger
            self._bump()

    def get(self, uid: str) -> Pod | None:
        """The pod with this UID or mirror hash, if known."""
        with self._changed:
            expired = [u for u, until in self._deleted.items() if until <= self._clock()]
            for gone in expired:
                pod = self._pods.pop(gone, None)
                self._pods.pop(pod.mirror_uid if pod else "", None)
                del self._deleted[gone]
            return self._pods.get(uid)

    def wait_for(self, predicate: Callable[[PodIndex], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds after a change, at most `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout)

    def _bump(self) -> None:
        self.generation += 1
        self._changed.notify_all()


def read_local(
    registry: Path, cgroup_id: int, expected: tuple[str, str] | None = None
) -> event_pb2.Attribution | None:
    """The attribution of a local pod's cgroup from its registry file, or None when there is
    none yet (or it cannot be read). With `expected` (namespace, pod) from the cgroup's path, an
    entry for another pod is refused: cgroup ids are inodes and get reused, and an ended pod's
    entry outlives it for a while so its last events can still be attributed."""
    try:
        entry = json.loads((registry / f"{cgroup_id}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not entry.get("namespace") or not entry.get("pod"):
        return None
    if expected is not None and (entry["namespace"], entry["pod"]) != expected:
        return None
    # A local pod has no API object: its UID is derived from what `parallax run` registered.
    name = f"{entry['namespace']}/{entry['pod']}/{cgroup_id}"
    result = event_pb2.Attribution(pod_uid=str(entry.get("pod_uid") or uuid.uuid5(_LOCAL, name)))
    result.image = str(entry.get("image") or "")
    result.image_digest = str(entry.get("image_digest") or "")
    ref = result.workload
    ref.namespace, ref.pod = str(entry["namespace"]), str(entry["pod"])
    ref.kind = str(entry.get("kind") or "Pod")
    ref.name = str(entry.get("workload") or entry["pod"])
    ref.container = str(entry.get("container") or entry["pod"])
    return result
