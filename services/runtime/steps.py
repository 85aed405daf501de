"""Collapsing of a batch's events into steps, so that rules and profiles see each behaviour once
per batch with its count instead of once per event. Pure; the wire module feeds each event in
batch order and the engine applies the steps in that order.

Events that change a container's process table (exec, fork, exit) and syscall sets stay one step
per event, in order. Other events merge into the earliest step of an equal event (equal in every
field but the time; flows also ignoring their hit count; opens that no rule or process table
looks at, such as failed ones, equal in their path's pattern, which is all the profile keeps),
unless something their evaluation depends on may have changed in between: an exec, fork or exit
of the same pid (the acting executable) or, for flows, a new DNS answer for the remote address
(the peer's names; a repeat of the address's last answer, same container and name, changes
nothing). So a merged step gives the same detections, alert counts, last-seen times
and profile items as its events one by one. One approximation remains: an entry evicted from a
full process table (over 1024 processes in a container) between two merged events still names
the executable."""

from __future__ import annotations

from collections.abc import Hashable

from services.runtime import domain
from services.runtime.domain import Step
from services.runtime.patterns import collapse_path
from services.runtime.profiles import WRITE_FLAGS
from services.runtime.signatures import TOKEN_DIRS

NEVER = object()  # Plan.quiet of the events the engine must always apply

# Merge keys by value, so that plans with equal keys share one key object and the collapser can
# key its steps by that object's identity (hashing a few ints, not the key's nested fields on
# every event). Cleared when full: plans keyed before and after a clear then stop merging with
# each other, which costs steps, never correctness.
_CANONICAL: dict[Hashable, Hashable] = {}
CANONICAL_SIZE = 262_144


def _canonical(key: Hashable) -> Hashable:
    found = _CANONICAL.get(key)
    if found is None:
        if len(_CANONICAL) >= CANONICAL_SIZE:
            _CANONICAL.clear()
        found = _CANONICAL[key] = key
    return found


class Plan:
    """How the collapser treats every event equal to `event` up to the time: its merge key
    (None for events kept in order), which versions its evaluation depends on (the acting
    pid's entry, the remote address's DNS names), and which it changes. For events that
    change no process or DNS table (inert opens, flows, capability checks, deviations) the
    engine keeps in `quiet` the context in which applying it last changed nothing, so that a
    repeat in a later batch in the same context is only counted."""

    __slots__ = ("address", "answerer", "event", "key", "new_answers", "pid", "quiet", "replaced")

    def __init__(self, event: domain.Event) -> None:
        self.event = event
        self.key: Hashable | None = self
        self.quiet: object = None
        self.pid: int | None = None
        self.address: str | None = None
        self.replaced: tuple[int, ...] = ()  # pids whose process-table entry the event changes
        self.new_answers: tuple[str, ...] = ()  # addresses whose DNS names the event may change
        self.answerer: tuple[int, str] = (0, "")  # the container and name a DNS answer is for
        payload = event.payload
        kind = type(payload)
        if kind is domain.FileOpen:
            assert isinstance(payload, domain.FileOpen)
            self.pid = event.pid
            if inert_open(payload.path, payload.flags, payload.return_value):
                self.key = _canonical(_open_key(event, payload))
            else:
                self.quiet = NEVER  # a write or a token read: always applied
        elif kind is domain.Capability:
            self.pid = event.pid
        elif kind is domain.Flow:
            assert isinstance(payload, domain.Flow)
            self.address = payload.remote_address
            self.key = _canonical(_flow_key(event, payload))
        elif kind is domain.Dns:
            assert isinstance(payload, domain.Dns)
            self.new_answers, self.quiet = payload.addresses, NEVER
            self.answerer = (id(event.origin), payload.name)
        elif kind is domain.Fork:
            assert isinstance(payload, domain.Fork)
            self.key, self.replaced = None, (payload.child_pid,)
        elif kind is not domain.Deviation:  # Exec, Exit and SyscallSet stay in order
            self.key, self.replaced = None, (event.pid,)


def inert_open(path: str, flags: int, return_value: int) -> bool:
    """Whether rules and process tables ignore an open, so that only its path's pattern matters
    (to the profile): true unless it succeeded and wrote (a possible drift) or read a
    service-account token (R0003)."""
    if return_value < 0:
        return True
    return not flags & WRITE_FLAGS and not path.startswith(TOKEN_DIRS)


def _actor(event: domain.Event) -> tuple[int, int, int, int, str]:
    """Who acted: the container (its Origin object) and the process."""
    return (id(event.origin), event.pid, event.ppid, event.uid, event.comm)


def _open_key(event: domain.Event, opened: domain.FileOpen) -> Hashable:
    """Opens that only the profile sees merge by their path's pattern (see inert_open)."""
    return (_actor(event), collapse_path(opened.path), opened.flags, opened.return_value)


def _flow_key(event: domain.Event, flow: domain.Flow) -> Hashable:
    """Flows differ in hit counts, which neither rules nor profiles look at (their ephemeral
    ports are already 0); other events merge only when equal in everything."""
    return (
        _actor(event),
        flow.direction,
        flow.protocol,
        flow.remote_address,
        flow.remote_port,
        flow.local_port,
        flow.return_value,
    )


class Collapser:
    """Builds the steps of one batch from its events in order."""

    __slots__ = ("_addresses", "_answered", "_open", "_pids", "steps")

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self._open: dict[tuple[int, int, int], Step] = {}
        self._pids: dict[int, int] = {}
        self._addresses: dict[str, int] = {}
        self._answered: dict[str, tuple[int, str]] = {}  # address -> the last (container, name)

    def add(self, plan: Plan, at: float) -> None:
        """Take the next event of the batch: one equal to `plan.event` but at time `at`."""
        if plan.key is None:
            self.steps.append(Step(plan.event, at, at))
            pids = self._pids
            for pid in plan.replaced:
                pids[pid] = pids.get(pid, 0) + 1
            return
        context = (
            id(plan.key),  # alive as long as the plan, which outlives the batch's collapsing
            self._pids.get(plan.pid, 0) if plan.pid is not None else 0,
            self._addresses.get(plan.address, 0) if plan.address is not None else 0,
        )
        step = self._open.get(context)
        if step is not None:
            step.count += 1
            step.last = max(step.last, at)
            return
        memo = plan if plan.quiet is not NEVER else None
        step = self._open[context] = Step(plan.event, at, at, memo)
        self.steps.append(step)
        addresses, answered = self._addresses, self._answered
        for address in plan.new_answers:
            if answered.get(address) != plan.answerer:  # repeating the last answer changes nothing
                answered[address] = plan.answerer
                addresses[address] = addresses.get(address, 0) + 1

    def ordered(self, event: domain.Event, at: float) -> None:
        """Take the next event of the batch when it is a fork or an exit, which has no plan
        (a fork names a new pid, an exit ends one: no later event repeats it)."""
        self.steps.append(Step(event, at, at))
        payload = event.payload
        pid = payload.child_pid if isinstance(payload, domain.Fork) else event.pid
        self._pids[pid] = self._pids.get(pid, 0) + 1
