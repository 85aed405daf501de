"""One behaviour profile and its learning lifecycle: items are added while LEARNING; once the
window passes with no new item the profile becomes COMPLETE, or PARTIAL when no replica's start
was observed, or events were dropped or observation gaps reported on its nodes while learning.
Only watched time counts towards the window: time in which a node running a replica reported
(the engine says until when; agents report at least every minute). An agent that went silent,
or a runtime that was down, cannot make a profile complete: nobody saw that nothing new
happened. Pure; times are epoch seconds from the engine's injectable clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.runtime import domain
from services.runtime.profiles import (
    Category,
    Context,
    Item,
    ItemKey,
    Replica,
    State,
    enrich,
    item_keys,
    profile_name,
)

DEFAULT_WINDOW = 24 * 3600.0
_MARKED = (Category.SYSCALL, Category.CAPABILITY)  # item.flags 1: only seen at start-up


@dataclass
class WorkloadRecord:
    """A workload seen in events or opted in to learning, with its learning settings."""

    workload: domain.Workload
    learning_enabled: bool = False
    window: float | None = None
    learning_start: float | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    pods: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Coverage:
    """How much a profile can be trusted (the proto's Coverage)."""

    last_new_item: float
    window: float
    observed: float
    replicas: int
    start_observed: bool
    start_reason: str
    events_dropped: int
    unattributed: int
    events_received: int
    watched: float = 0.0
    gaps: int = 0


class Profile:
    """The learned behaviour of one container of a workload for one image digest."""

    def __init__(
        self, workload: domain.Workload, container: str, image: str, digest: str, now: float
    ) -> None:
        self.workload = workload
        self.container = container
        self.image = image
        self.digest = digest
        self.name = profile_name(workload, container, digest)
        self.current = True
        self.state = State.LEARNING
        self.reason = "LEARNING: recording behaviour"
        self.create_time = self.update_time = self.last_new_item = now
        self.complete_time: float | None = None
        self.window = DEFAULT_WINDOW
        self.events_received = self.events_dropped = self.unattributed = 0
        self.watched = 0.0  # seconds of watched time since the last new item
        self.mark = now  # up to when watched time has been accounted
        self.gaps = 0  # observation gaps reported on its nodes while learning
        self.gap_detail = ""  # the first of them, as its agent described it
        self.replicas: dict[str, Replica] = {}
        self.items: dict[Category, dict[ItemKey, Item]] = {c: {} for c in Category}
        self.dirty: set[tuple[Category, ItemKey]] = set()
        self.changed = True

    @property
    def learning(self) -> bool:
        """Return True while the profile still records new behaviour."""
        return self.state is State.LEARNING

    def has(self, category: Category, key: ItemKey) -> bool:
        """Return True when the profile holds the item."""
        return key in self.items[category]

    def replica(self, origin: domain.Origin, event: domain.Event) -> Replica:
        """Return the replica of `origin`, registering it (and its start verdict) when new."""
        found = self.replicas.get(origin.pod_uid)
        if found is None or found.cgroup_id != origin.cgroup_id:
            # A new pod, or its container restarted in a new cgroup: that one is what agents
            # are told to learn or monitor. A start observed before stays observed.
            previous = found
            found = self.replicas[origin.pod_uid] = Replica(origin)
            found.observe_first(event)
            if previous is not None and previous.start_observed and not found.start_observed:
                found.start_observed, found.reason = True, previous.reason
            self.changed = True
        elif isinstance(event.payload, domain.SyscallSet):
            found.note_syscall_set(event.payload)
            self.changed = True
        return found

    def learn(self, event: domain.Event, context: Context, now: float, count: int = 1) -> bool:
        """Fold `event`, standing for `count` equal events, into the items; return whether it
        added or changed any."""
        new = 0
        touched = False
        pod = event.origin.pod_uid
        payload = event.payload
        startup = payload.startup if isinstance(payload, domain.SyscallSet) else frozenset()
        # Checks made before the container's first exec are the container runtime's set-up.
        setup = isinstance(payload, domain.Capability) and payload.startup
        for category, key, label in item_keys(event):
            table = self.items[category]
            item = table.get(key)
            changed = False
            early = setup or (category is Category.SYSCALL and key[1] in startup)
            if item is None:
                item = table[key] = Item(event.at or now, label)
                item.flags = 1 if early else 0
                new += 1
            elif item.flags and not early and category in _MARKED:
                item.flags, changed = 0, True  # the workload itself uses it too
            if pod not in item.pods:
                item.pods.add(pod)
                changed = True
            if enrich(item, category, event, context, count) or changed:
                self.dirty.add((category, key))
                touched = True
        if new:
            self.last_new_item = self.update_time = self.mark = now
            self.watched = 0.0
            self.changed = True
        return touched  # a new item is touched too: its first pod is added

    def advance(self, now: float, watched_until: float) -> bool:
        """Apply the lifecycle at `now`, counting the time since the last call as watched up to
        `watched_until` (when a node of a replica was last known to report); return True when
        the state changed."""
        if self.state is not State.LEARNING:
            return False
        start, self.mark = self.mark, max(self.mark, now)
        end = min(now, watched_until)
        if end > start:
            self.watched += end - start
        if self.watched < self.window:
            return False
        self.complete_time = self.update_time = now
        started, why = self.start_verdict()
        if not started:
            self.state, self.reason = (
                State.PARTIAL,
                f"PARTIAL: container start not observed ({why})",
            )
        elif self.events_dropped:
            self.state = State.PARTIAL
            self.reason = (
                f"PARTIAL: {self.events_dropped} events dropped on its nodes while learning"
            )
        elif self.gaps:
            self.state = State.PARTIAL
            self.reason = (
                f"PARTIAL: {self.gaps} observation gaps on its nodes while learning"
                f" (first: {self.gap_detail})"
            )
        else:
            self.state = State.COMPLETE
            self.reason = f"COMPLETE: no new behaviour in {self.window:g}s watched; {why}"
            if self.unattributed:
                self.reason += (
                    f"; {self.unattributed} events on its nodes were not attributed to any pod"
                )
        self.changed = True
        return True

    def stop(self, now: float, why: str = "") -> bool:
        """End learning before its window was watched (opted out, or a new image digest took
        over): PARTIAL, saying why and how much was watched, never COMPLETE. Returns whether it
        was learning."""
        if self.state is not State.LEARNING:
            return False
        why = why or "learning stopped by the operator before its window was watched"
        self.state, self.complete_time, self.update_time = State.PARTIAL, now, now
        self.reason = f"PARTIAL: {why} ({self.watched:g}s of {self.window:g}s watched)"
        self.changed = True
        return True

    def note_gap(self, detail: str) -> None:
        """Count an observation gap reported on a node of a replica while learning."""
        self.gaps += 1
        self.gap_detail = self.gap_detail or detail[:200]
        self.changed = True

    def restart(self, now: float, window: float) -> None:
        """Opt in again: back to LEARNING with a fresh window, and the blind spots of the
        previous one forgotten (they are about behaviour this window will see again)."""
        self.state, self.reason = State.LEARNING, "LEARNING: learning restarted"
        self.last_new_item = self.update_time = self.mark = now
        self.watched = 0.0
        self.events_dropped = self.unattributed = self.gaps = 0
        self.gap_detail = ""
        self.complete_time = None
        self.window = window
        self.changed = True

    def start_verdict(self) -> tuple[bool, str]:
        """Return whether any replica's start was observed, and why (or why not)."""
        if not self.replicas:
            return False, "no replica seen yet"
        for replica in self.replicas.values():
            if replica.start_observed:
                return True, replica.reason
        return False, "; ".join(r.reason for r in list(self.replicas.values())[:3])

    def coverage(self, now: float) -> Coverage:
        """Return the coverage figures at `now`."""
        start, why = self.start_verdict()
        return Coverage(
            last_new_item=self.last_new_item,
            window=self.window,
            observed=(self.complete_time or now) - self.create_time,
            replicas=len(self.replicas),
            start_observed=start,
            start_reason=why,
            events_dropped=self.events_dropped,
            unattributed=self.unattributed,
            events_received=self.events_received,
            watched=self.watched,
            gaps=self.gaps,
        )

    def syscall_numbers(self) -> dict[int, list[int]]:
        """Return the learned syscall numbers per architecture, ascending."""
        by_arch: dict[int, list[int]] = {}
        for arch, number in sorted(self.items[Category.SYSCALL]):  # type: ignore[type-var]
            by_arch.setdefault(int(arch), []).append(int(number))
        return by_arch
