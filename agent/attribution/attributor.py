"""Ties events to pods: cgroup id → cgroup path (learned from `cgroup_mkdir` and a walk of the
hierarchy) → pod UID and container ID → pod metadata (API server or local registry). Events of
cgroups not yet resolvable are held for a bounded time and count, then released unattributed
with a reason: never attributed to a wrong pod. Each cgroup is resolved once per call, and
compact records get their cgroup's attribution in the result's table, not one each. An
attribution says whether the cgroup's creation was seen (`cgroup_start`): the runtime's
verdict on whether a container's start was observed rests on it. Called by the agent's main
loop."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from parallax.runtime.v1 import event_pb2

from agent.attributed import Attributed, Item, Resolved, attach, message
from agent.attribution import paths
from agent.attribution.pods import PodIndex, read_local

_UNKNOWN = event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
_NO_METADATA = event_pb2.UNATTRIBUTED_REASON_METADATA_UNAVAILABLE
_NOT_A_CONTAINER = event_pb2.UNATTRIBUTED_REASON_NOT_A_CONTAINER
_OBSERVED, _MISSED = event_pb2.CGROUP_START_OBSERVED, event_pb2.CGROUP_START_MISSED
_MISSING = object()
_UNSEEN = event_pb2.UnattributedReason.ValueType(-1)  # not a reason: a cgroup not yet resolved


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
        self._created: set[int] = set()  # cgroups whose creation (cgroup_mkdir) was seen
        self._cache: dict[int, event_pb2.Attribution] = {}
        self._generation = -1
        self._held: dict[int, deque[tuple[float, Item]]] = {}
        self.held = 0
        self._last_rescan = float("-inf")

    def learn(self, cgroup_id: int, path: str, *, created: bool = False) -> None:
        """Record a cgroup's path: `created` from `cgroup_mkdir` (its start is observed), else
        from a walk of cgroups that already existed."""
        self._cgroups[cgroup_id] = paths.parse(path)
        if created:
            self._created.add(cgroup_id)
        else:
            self._created.discard(cgroup_id)
        self._cache.pop(cgroup_id, None)

    def attribute(self, events: Iterable[Item]) -> Attributed:
        """Attribute `events`; return those ready to ship, holding those of unresolved cgroups.
        A cgroup's held events are released before its newer ones. Each cgroup is resolved once
        per call (`seen`), so all its compact records share one attribution."""
        ready = Attributed()
        seen: dict[int, Resolved | None] = {}
        append = ready.items.append
        for event in events:
            cgroup = event[1] if isinstance(event, tuple) else event.cgroup_id
            found = seen.get(cgroup, _UNSEEN)
            if found is _UNSEEN:
                found = seen[cgroup] = self._resolve(cgroup)
                if found is not None:
                    ready.cgroups[cgroup] = found
                    if cgroup in self._held:
                        self._release(cgroup, found, ready)
            if found is None:
                self._hold(cgroup, event, ready, seen)
            elif isinstance(event, tuple):
                append(event)
            else:
                append(attach(event, found))
        return ready

    def tick(self, *, everything: bool = False) -> Attributed:
        """Release held events whose cgroup became resolvable or whose hold time expired; with
        `everything` (the agent's stop), rescan once and end every hold."""
        now, ready = self._clock(), Attributed()
        unknown = any(c not in self._cgroups for c in self._held)
        due = everything or now - self._last_rescan >= self._hold_seconds
        if unknown and self._rescan is not None and due:
            self._last_rescan = now
            for cgroup_id, path in self._rescan():
                self._cgroups.setdefault(cgroup_id, paths.parse(path))
        for cgroup in list(self._held):
            found = self._resolve(cgroup)
            if found is not None:
                ready.cgroups[cgroup] = found
                self._release(cgroup, found, ready)
                continue
            queue = self._held[cgroup]
            while queue and (everything or queue[0][0] <= now):
                self._expire(cgroup, queue.popleft()[1], ready)
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
            found.cgroup_start = _OBSERVED if cgroup_id in self._created else _MISSED
            self._cache[cgroup_id] = found
        return found

    def _hold(
        self, cgroup: int, event: Item, ready: Attributed, seen: dict[int, Resolved | None]
    ) -> None:
        self._held.setdefault(cgroup, deque()).append((self._clock() + self._hold_seconds, event))
        self.held += 1
        while self.held > self._hold_limit:  # release the oldest cgroup's oldest event
            oldest = next(iter(self._held))
            seen[oldest] = None  # held for the rest of the call: one attribution per cgroup
            self._expire(oldest, self._held[oldest].popleft()[1], ready)
            if not self._held[oldest]:
                del self._held[oldest]

    def _release(self, cgroup: int, found: Resolved, ready: Attributed) -> None:
        queue = self._held.pop(cgroup)
        self.held -= len(queue)
        ready.items.extend(e if isinstance(e, tuple) else attach(e, found) for _, e in queue)

    def _expire(self, cgroup: int, event: Item, ready: Attributed) -> None:
        self.held -= 1
        reason = _UNKNOWN if cgroup not in self._cgroups else _NO_METADATA
        if not isinstance(event, tuple):
            ready.items.append(attach(event, reason))
        elif ready.cgroups.setdefault(cgroup, reason) == reason:
            ready.items.append(event)
        else:  # the cgroup's other records in this result are attributed
            ready.items.append(message(event, {cgroup: reason}))
