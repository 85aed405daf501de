"""Ties events to pods: cgroup id → cgroup path (learned from `cgroup_mkdir` and a walk of the
hierarchy) → pod UID and container ID → pod metadata (API server or local registry). Events of
cgroups not yet resolvable are held for a bounded time and count, then released unattributed
with a reason: never attributed to a wrong pod. Called by the agent's main loop."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeAlias

from parallax.runtime.v1 import event_pb2

from agent.attribution import paths
from agent.attribution.pods import PodIndex, read_local

Reason: TypeAlias = event_pb2.UnattributedReason.ValueType
Resolved: TypeAlias = event_pb2.Attribution | Reason  # an attribution, or a final reason
_UNKNOWN = event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
_NO_METADATA = event_pb2.UNATTRIBUTED_REASON_METADATA_UNAVAILABLE
_NOT_A_CONTAINER = event_pb2.UNATTRIBUTED_REASON_NOT_A_CONTAINER
_MISSING = object()


class Attributor:
    """Attribution of event batches, with the held events of unresolved cgroups."""

    def __init__(
        self,
        index: PodIndex,
        registry: Path,
        *,
        hold_seconds: float = 2.0,
        hold_limit: int = 10_000,
        rescan: Callable[[], Iterable[tuple[int, str]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index, self._registry, self._rescan, self._clock = index, registry, rescan, clock
        self._hold_seconds, self._hold_limit = hold_seconds, hold_limit
        self._cgroups: dict[int, paths.CgroupRef | None] = {}
        self._cache: dict[int, event_pb2.Attribution] = {}
        self._generation = -1
        self._held: dict[int, deque[tuple[float, event_pb2.Event]]] = {}
        self.held = 0
        self._last_rescan = float("-inf")

    def learn(self, cgroup_id: int, path: str) -> None:
        """Record a cgroup's path (from `cgroup_mkdir`, or the walk at start)."""
        self._cgroups[cgroup_id] = paths.parse(path)
        self._cache.pop(cgroup_id, None)

    def attribute(self, events: Iterable[event_pb2.Event]) -> list[event_pb2.Event]:
        """Attribute `events`; return those ready to ship, holding those of unresolved cgroups.
        A cgroup's held events are released before its newer ones."""
        ready: list[event_pb2.Event] = []
        for event in events:
            cgroup = event.cgroup_id
            found = self._resolve(cgroup)
            if found is None:
                self._hold(cgroup, event, ready)
                continue
            if cgroup in self._held:
                self._release(cgroup, found, ready)
            ready.append(_apply(event, found))
        return ready

    def tick(self) -> list[event_pb2.Event]:
        """Release held events whose cgroup became resolvable or whose hold time expired."""
        now, ready = self._clock(), list[event_pb2.Event]()
        unknown = any(c not in self._cgroups for c in self._held)
        if unknown and self._rescan is not None and now - self._last_rescan >= self._hold_seconds:
            self._last_rescan = now
            for cgroup_id, path in self._rescan():
                self._cgroups.setdefault(cgroup_id, paths.parse(path))
        for cgroup in list(self._held):
            found = self._resolve(cgroup)
            if found is not None:
                self._release(cgroup, found, ready)
                continue
            queue = self._held[cgroup]
            while queue and queue[0][0] <= now:
                ready.append(self._expire(cgroup, queue.popleft()[1]))
            if not queue:
                del self._held[cgroup]
        return ready

    def _resolve(self, cgroup_id: int) -> Resolved | None:
        """The attribution or final reason for a cgroup, or None while it may still resolve."""
        if cgroup_id == 0:
            return event_pb2.UNATTRIBUTED_REASON_NO_CGROUP
        if self._generation != self._index.generation:
            self._generation = self._index.generation
            self._cache.clear()
        cached = self._cache.get(cgroup_id)
        if cached is not None:
            return cached
        ref = self._cgroups.get(cgroup_id, _MISSING)
        found: event_pb2.Attribution | None = None
        if ref is None or (isinstance(ref, paths.KubeRef) and not ref.container_id):
            return _NOT_A_CONTAINER
        if isinstance(ref, paths.KubeRef):
            pod = self._index.get(ref.pod_uid)
            found = pod.attribution(ref.container_id) if pod else None
        else:  # local pods, and cgroups whose creation the agent missed
            expected = (ref.namespace, ref.pod) if isinstance(ref, paths.LocalRef) else None
            found = read_local(self._registry, cgroup_id, expected)
        if found is not None:
            self._cache[cgroup_id] = found
        return found

    def _hold(self, cgroup: int, event: event_pb2.Event, ready: list[event_pb2.Event]) -> None:
        if self.held >= self._hold_limit:  # release the oldest cgroup's oldest event
            oldest = next(iter(self._held))
            ready.append(self._expire(oldest, self._held[oldest].popleft()[1]))
            if not self._held[oldest]:
                del self._held[oldest]
        self._held.setdefault(cgroup, deque()).append((self._clock() + self._hold_seconds, event))
        self.held += 1

    def _release(self, cgroup: int, found: Resolved, ready: list[event_pb2.Event]) -> None:
        queue = self._held.pop(cgroup)
        self.held -= len(queue)
        ready.extend(_apply(event, found) for _, event in queue)

    def _expire(self, cgroup: int, event: event_pb2.Event) -> event_pb2.Event:
        self.held -= 1
        reason = _UNKNOWN if cgroup not in self._cgroups else _NO_METADATA
        return _apply(event, reason)


def _apply(event: event_pb2.Event, found: Resolved) -> event_pb2.Event:
    if isinstance(found, event_pb2.Attribution):
        event.attribution.CopyFrom(found)
    else:
        event.attribution.unattributed_reason = found
    return event
