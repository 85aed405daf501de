"""The runtime service's core, called by the servicer: applies each validated batch to the
in-memory profiles, container states, nodes and alerts, writes the batch's dedupe record and
deltas in one transaction before it is acknowledged, and tells listeners (WatchAlerts, stdout,
webhook) about alert changes after the commit. Memory is a cache of the store: a failed commit
reloads it. One lock serialises writers; readers take it too."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from services.runtime import domain, rules
from services.runtime.alerts import Alert, AlertBook, AlertState
from services.runtime.containers import ContainerState
from services.runtime.learning import DEFAULT_WINDOW, Profile, WorkloadRecord
from services.runtime.nodes import SILENT_AFTER, Node
from services.runtime.profiles import Context, profile_name
from services.runtime.sequences import Seen
from services.runtime.store import Changes, RuntimeStore

MAX_NODES_PER_WORKLOAD = 100
RESEND_WINDOW = 3600.0  # agents resend unacknowledged batches within seconds; keep an hour
SESSION_RETENTION = 7 * 86400.0  # then forget sessions silent this long entirely
PRUNE_EVERY = 600.0
Change = Literal["added", "updated", "removed"]
Listener = Callable[[list[tuple[Alert, Change]]], None]


class Engine:
    """Profiles, alerts and nodes in memory over a RuntimeStore."""

    def __init__(
        self,
        store: RuntimeStore,
        clock: Callable[[], float],
        default_window: float = DEFAULT_WINDOW,
    ) -> None:
        self.store = store
        self.clock = clock
        self.default_window = default_window
        self.lock = threading.RLock()
        self.listeners: list[Listener] = []
        self.sequences: dict[tuple[str, str, str], Seen] = {}
        self.pruned = 0.0
        self.boxes: dict[tuple[str, str], ContainerState] = {}
        self._load()

    def _load(self) -> None:
        snapshot = self.store.load()
        self.profiles = {p.name: p for p in snapshot.profiles}
        self.current = {(p.workload, p.container): p for p in snapshot.profiles if p.current}
        self.workloads = {w.workload: w for w in snapshot.workloads}
        self.nodes = {n.node: n for n in snapshot.nodes}
        self.alerts = AlertBook()
        for alert in snapshot.alerts:
            self.alerts.load(alert)
        self.sequences.clear()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with alert changes after each commit; return the unsubscriber."""
        with self.lock:
            self.listeners.append(listener)
        return lambda: self._unsubscribe(listener)

    def _unsubscribe(self, listener: Listener) -> None:
        with self.lock:
            if listener in self.listeners:
                self.listeners.remove(listener)

    def ingest(self, batch: domain.Batch) -> bool:
        """Apply and store `batch`; return True when it was already stored (a resend)."""
        with self.lock:
            session = (batch.key.agent_id, batch.key.boot_id, batch.key.session_id)
            now = self.clock()
            seen = self.sequences.get(session)
            if seen is None:
                seen = self.sequences[session] = Seen(self.store.sequences(batch.key), now)
            if batch.key.sequence in seen:
                return True
            changes = Changes(batch=batch.key, received=now)
            alerts = self._commit(changes, lambda: self._apply(batch, now, changes))
            seen.add(batch.key.sequence, now)
            self._notify([(a, "added" if new else "updated") for a, new in alerts])
        return False

    def _commit(self, changes: Changes, apply: Callable[[], None]) -> list[tuple[Alert, bool]]:
        try:
            apply()
            flushed = self.alerts.flush(self.clock())
            changes.alerts.extend(a for a, _ in flushed)
            self.store.commit(changes)
        except BaseException:
            self.alerts.discard_pending()
            self._load()
            raise
        return flushed

    def _apply(self, batch: domain.Batch, now: float, changes: Changes) -> None:
        node = self.nodes.get(batch.report.node) or Node(batch.report.node)
        self.nodes[node.node] = node
        resumed = (node.node, node.last_report)  # the time before this batch was not watched
        dropped, unattributed, gaps = node.apply(batch, now)
        touched: dict[str, Profile] = {}
        seen_origins: dict[int, tuple[Profile, ContainerState]] = {}
        for step in batch.steps:
            event = step.base  # the step's event but maybe for its time, which only _step needs
            pair = seen_origins.get(id(event.origin))
            if pair is None:
                pair = seen_origins[id(event.origin)] = self._enter(
                    step.event, now, touched, changes, resumed
                )
            profile, box = pair
            kind = type(event.payload)
            if kind is domain.Fork or kind is domain.Exit:
                box.observe(event)  # no rule or profile item looks at forks and exits
                profile.events_received += 1
                continue
            if kind is domain.SyscallSet:
                profile.replica(event.origin, step.event)
            payload = event.payload
            names = (
                box.dns.get(payload.remote_address, ()) if isinstance(payload, domain.Flow) else ()
            )
            exe, memo = box.exe(event), step.memo
            if memo is None:
                self._step(step, profile, box, now, exe=exe, names=names)
                continue
            # An event that changes no table: a repeat in the context in which it last changed
            # nothing (same profile and state, acting executable, peer's names) is only counted.
            context = (profile, profile.state, exe, names)
            if memo.quiet == context:
                profile.events_received += step.count
            else:
                quiet = self._step(step, profile, box, now, exe=exe, names=names)
                memo.quiet = context if quiet else None
        if dropped or unattributed or gaps:
            self._blind_spots(node.node, dropped, unattributed, gaps, touched)
        changes.nodes.append(node)
        for profile in touched.values():
            changes.profiles.append(profile)
            changes.items.extend(
                (profile.name, c, k, profile.items[c][k]) for c, k in profile.dirty
            )
            profile.dirty.clear()
            profile.changed = False

    def _step(
        self,
        step: domain.Step,
        profile: Profile,
        box: ContainerState,
        now: float,
        *,
        exe: str,
        names: tuple[str, ...],
    ) -> bool:
        """Apply one step (`exe` is the acting executable, `names` the peer's DNS names);
        return True when it raised no alert and changed no profile item."""
        event = step.event
        detections = rules.evaluate(event, profile, box)
        if detections:
            tree = box.tree(event)
            for detection in detections:
                self.alerts.record(detection, event, tree, step.count, step.last)
        learned = False
        if profile.learning:
            context = Context(exe, box.parent_exe(event), names)
            learned = profile.learn(event, context, now, step.count)
        box.observe(event)
        profile.events_received += step.count
        return not detections and not learned

    def _enter(
        self,
        event: domain.Event,
        now: float,
        touched: dict[str, Profile],
        changes: Changes,
        resumed: tuple[str, float],
    ) -> tuple[Profile, ContainerState]:
        origin = event.origin
        record = self._workload(origin.workload, now)
        record.last_seen = now
        record.pods.add(origin.pod_uid)
        if len(record.nodes) < MAX_NODES_PER_WORKLOAD:
            record.nodes.add(origin.node)
        if not any(w is record for w in changes.workloads):
            changes.workloads.append(record)
        profile = self._profile(origin, record, now, touched)
        profile.advance(now, self._watched_until(profile, resumed))
        profile.replica(origin, event)
        touched[profile.name] = profile
        box_key = (origin.pod_uid, origin.container)
        box = self.boxes.get(box_key)
        if box is None:
            box = self.boxes[box_key] = ContainerState()
        return profile, box

    def _workload(self, workload: domain.Workload, now: float) -> WorkloadRecord:
        record = self.workloads.get(workload)
        if record is None:
            record = self.workloads[workload] = WorkloadRecord(workload, first_seen=now)
        return record

    def _profile(
        self, origin: domain.Origin, record: WorkloadRecord, now: float, touched: dict[str, Profile]
    ) -> Profile:
        slot = (origin.workload, origin.container)
        current = self.current.get(slot)
        digest = origin.image_digest or (current.digest if current else "unresolved")
        profile = self.profiles.get(profile_name(origin.workload, origin.container, digest))
        if profile is not None:
            return profile
        profile = Profile(origin.workload, origin.container, origin.image, digest, now)
        profile.window = record.window or self.default_window
        self.profiles[profile.name] = self.current[slot] = profile
        if current is not None:
            current.current = False
            current.stop(now, f"superseded by image digest {digest} before its window was watched")
            touched[current.name] = current
        return profile

    def _blind_spots(
        self,
        node: str,
        dropped: int,
        unattributed: int,
        gaps: tuple[domain.Gap, ...],
        touched: dict[str, Profile],
    ) -> None:
        for profile in self.current.values():
            if profile.learning and any(r.node == node for r in profile.replicas.values()):
                profile.events_dropped += dropped
                profile.unattributed += unattributed
                for gap in gaps:
                    profile.note_gap(f"node {node}: {gap.detail or 'no detail'}")
                touched[profile.name] = profile

    def _watched_until(self, profile: Profile, resumed: tuple[str, float] = ("", 0.0)) -> float:
        """Until when a node running a replica of `profile` was watching: its last report plus
        the time within which its agent reports even when idle (nodes.SILENT_AFTER). For the
        node of the batch being applied (`resumed`), its report before that batch: a batch
        after a silence (an agent reconnecting with its backlog) does not make the silence
        watched, so its events are still learned."""
        until = 0.0
        for replica in profile.replicas.values():
            node = self.nodes.get(replica.node)
            if node is None:
                continue
            last = resumed[1] if node.node == resumed[0] else node.last_report
            until = max(until, last)
        return until + SILENT_AFTER if until else 0.0

    def tick(self) -> list[Profile]:
        """Apply the lifecycle to every learning profile now; store and return the changed.
        Every PRUNE_EVERY seconds, also prune the dedupe records resends no longer need."""
        with self.lock:
            now = self.clock()
            moved = [p for p in self.current.values() if p.advance(now, self._watched_until(p))]
            if moved:
                self._commit(Changes(profiles=moved), lambda: None)
            if now - self.pruned >= PRUNE_EVERY:
                self.prune(now)
            return moved

    def prune(self, now: float) -> int:
        """Drop dedupe records older than the resend window (keeping each session's newest)
        and sessions silent for SESSION_RETENTION; return how many records went."""
        with self.lock:
            self.pruned = now
            cutoff = now - SESSION_RETENTION
            for session, seen in list(self.sequences.items()):
                if seen.last_batch < cutoff:
                    del self.sequences[session]
            return self.store.prune_batches(now - RESEND_WINDOW, cutoff)

    def set_learning(
        self, workload: domain.Workload, container: str, enabled: bool, window: float | None
    ) -> WorkloadRecord:
        """Opt a workload in (restarting its window) or out of learning."""
        with self.lock:
            now = self.clock()
            record = self._workload(workload, now)
            record.learning_enabled = enabled
            changes = Changes(workloads=[record])
            for (owner, name), profile in self.current.items():
                if owner != workload or container not in ("", name):
                    continue
                if enabled:
                    profile.restart(now, window or self.default_window)
                elif not profile.stop(now):
                    continue
                changes.profiles.append(profile)
            if enabled:
                record.window, record.learning_start = window, now
            self._commit(changes, lambda: None)
            return record

    def set_alert_state(self, alert_id: str, state: AlertState, reason: str) -> Alert:
        """Acknowledge or resolve an alert, store it and tell the listeners."""
        with self.lock:
            alert = self.alerts.set_state(alert_id, state, reason, self.clock())
            forgotten = self.alerts.forget_resolved()
            self._commit(Changes(alerts=[alert], forgotten_alerts=forgotten), lambda: None)
            change: Change = "removed" if state is AlertState.RESOLVED else "updated"
            self._notify([(alert, change)])
            return alert

    def _notify(self, changes: list[tuple[Alert, Change]]) -> None:
        if changes:
            for listener in list(self.listeners):
                listener(changes)
