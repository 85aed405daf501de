"""The agent's handle on the loaded probes' maps: which cgroups are tracked, learning or monitored,
the rules that track (and pre-learn) new cgroups at mkdir, and reads of syscall sets,
de-duplication counts and drop counters. Called by agent.probes.source (cgroup changes, reports),
agent.learning (the runtime's targets, on its own thread) and the recorder; thread-safe.

A cgroup tracked from user space while it runs already (`track`) has its first exec marked as
seen, so caps.c tags as the container runtime's start-up only the capability checks of cgroups
whose start the kernel saw (tracked at their mkdir, or made by the caller just before).

Learning follows the learning targets. A cgroup's entry in the kernel's `learning` map is either
confirmed (set by `learn` or `monitor`, which agent.learning calls for the cgroups the runtime
lists) or provisional: made by the kernel at a container cgroup's mkdir, so that its start-up
syscalls are kept while nobody knows yet whether its workload is a target (the pod's metadata
and the runtime's answer come later). A provisional set is never reported by itself; it becomes
reportable when a target claims the cgroup (cumulative from its mkdir, start-up included), and
it is dropped when no target claims it within a grace period (`expire`), or at once when the
runtime lists no workload in its learning window. Pod and QoS slices never learn (`adopt`).

sys_enter (Group.SYSCALLS) is attached exactly while some cgroup learns, is monitored or is
provisional, or while `prelearn` is on (some workload is in its learning window, so the next
container started here is seen from its first syscall). Otherwise it is detached: no tax.
A provisional entry made while it was detached still sees the whole start when the program is
attached before the cgroup's first task runs, which `adopt` checks from the cgroup's CPU time.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.probes.loader import Group, Loader

NR_MAX = 512
N_TYPES = 18
PREFIX_MAX = 64
PREFIX_SLOTS = 4
FILTER_SLOTS = 65536
# Reads of provisional cgroups removed before a target claimed them, kept for a claim that comes
# later (a short-lived container of a learning workload): at most this many.
HELD_MAX = 1024
LOSS_TRACK, LOSS_LEARN = 0, 1
LOSS_MARK_KERNEL, LOSS_MARK_USER = 0, 1  # process.c exec_mark_losses slots

log = logging.getLogger(__name__)


class Mode(enum.IntEnum):
    """What the sys_enter program does for a cgroup."""

    LEARN = 1
    MONITOR = 2


@dataclass(frozen=True)
class SyscallSetRead:
    """One cgroup's in-kernel syscall set: before its first exec (runtime start-up) and after.
    `start_seen`: recorded from before the cgroup's first task ran; `provisional`: not (yet)
    claimed by a learning target."""

    cgroup_id: int
    mode: Mode
    execd: bool
    pre: frozenset[int]
    post: frozenset[int]
    start_seen: bool = False
    provisional: bool = False

    @property
    def numbers(self) -> frozenset[int]:
        """Every syscall seen in learning mode."""
        return self.pre | self.post

    @property
    def startup_only(self) -> frozenset[int]:
        """Syscalls seen only before the first exec: the container runtime's own."""
        return self.pre - self.post


@dataclass(frozen=True)
class CgroupLosses:
    """Cgroups a rule matched that the kernel could not keep, because a map was full; and
    first execs not marked (`exec_seen` full), since which no capability check is tagged as
    start-up."""

    untracked: int
    unlearned: int
    unmarked: int = 0


def _bits(array: Any) -> frozenset[int]:
    return frozenset(i for i, v in enumerate(bytes(array)) if v)


def never_ran(cgroup: Path) -> bool:
    """True when no task has run in the cgroup at `cgroup` yet: none inside, no CPU time."""
    try:
        stat = (cgroup / "cpu.stat").read_text().split()
        events = (cgroup / "cgroup.events").read_text().split()
    except OSError:
        return False
    usage = stat[stat.index("usage_usec") + 1] if "usage_usec" in stat else ""
    populated = events[events.index("populated") + 1] if "populated" in events else ""
    return usage == "0" and populated == "0"


class Control:
    """Operations on a Loader's maps; SYSCALLS stays attached only while something needs it."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self._learning = loader.table("learning")
        self._tracked = loader.table("tracked")
        self._exec_seen = loader.table("exec_seen")
        self._rules = loader.table("cgroup_rules")
        self._prefixes: list[tuple[str, bool]] = []
        self._filter_slots: set[int] = set()
        self._lock = threading.RLock()
        self._confirmed: dict[int, Mode] = {}
        self._monitored: dict[int, frozenset[int]] = {}
        self._provisional: dict[int, float] = {}  # cgroup id -> when first noticed (monotonic)
        self._start_seen: set[int] = set()  # entries whose start user space saw (`adopt`)
        self._held: dict[int, tuple[float, SyscallSetRead]] = {}
        self._final: dict[int, SyscallSetRead] = {}  # last reads of ended learning, to report
        self._kube = self._kube_learn = self._prelearn = False
        self._listeners: list[Callable[[], None]] = []
        self._user_losses = [0, 0]
        # cgroup_mkdir copies this template into `learning` for cgroups of a learning rule.
        template = loader.table("zero_state")
        leaf = template.Leaf()
        leaf.mode = Mode.LEARN
        template[template.Key(0)] = leaf

    def track(self, cgroup_id: int, running: bool = True) -> None:
        """Record exec, file, network, DNS and capability events of this cgroup. With `running`
        (the default: a cgroup found already there, whose first exec may have come before the
        agent) its capability checks are all the workload's; without it (a cgroup just made, where
        nothing ran) checks before its first exec are tagged as the container runtime's start-up.
        """
        with self._lock:
            try:
                self._tracked[self._tracked.Key(cgroup_id)] = self._tracked.Leaf(1)
            except Exception:  # bcc raises a bare Exception when the map is full
                self._lost(LOSS_TRACK, "tracked", cgroup_id)
                return
            if running:
                self._mark_exec_seen(cgroup_id)

    def _mark_exec_seen(self, cgroup_id: int) -> None:
        try:
            self._exec_seen[self._exec_seen.Key(cgroup_id)] = self._exec_seen.Leaf(1)
        except Exception:  # full: caps.c then takes every check for the workload's (fail safe)
            losses = self.loader.table("exec_mark_losses")
            key = losses.Key(LOSS_MARK_USER)
            losses[key] = losses.Leaf(losses[key].value + 1)
            log.warning(
                "cgroup %d's first exec cannot be marked: the `exec_seen` map is full, so no "
                "capability check is told apart as start-up any more; raise its size in "
                "agent/probes/process.c",
                cgroup_id,
            )

    def learn(self, cgroup_id: int, running: bool = False) -> None:
        """Learn this cgroup's syscall set; attaches sys_enter. A provisional entry is claimed
        (its set since mkdir kept); a monitored one goes back to learning with an empty set (a
        learning restart: the runtime keeps the profile's items, so the kernel set restarts);
        a new entry counts syscalls before the next exec as start-up unless `running` (its
        processes run already, as for every cgroup the runtime lists), and counts as having
        seen the start only without `running`. A gone cgroup's held set is released for
        `reports`."""
        with self._lock:
            if self._confirmed.get(cgroup_id) == Mode.LEARN:
                return
            held = self._held.pop(cgroup_id, None)
            if held is not None:  # gone before the claim: report what it did
                self._final[cgroup_id] = dataclasses.replace(held[1], provisional=False)
                return
            current = self._leaf(cgroup_id)
            if current is None or current.mode != Mode.LEARN:
                leaf = self._learning.Leaf()
                leaf.mode = Mode.LEARN
                if current is None:
                    leaf.execd, leaf.start = int(running), int(not running)
                else:
                    leaf.execd, leaf.start = current.execd, int(self._seen(cgroup_id, current))
                    self._clear("deviations", cgroup_id)
                if not self._write(cgroup_id, leaf):
                    return
            self._provisional.pop(cgroup_id, None)
            self._confirmed[cgroup_id] = Mode.LEARN
            self._monitored.pop(cgroup_id, None)
            self._gate()

    def monitor(self, cgroup_id: int, learned: frozenset[int], execd: bool = True) -> None:
        """Compare this cgroup's syscalls in the kernel with `learned`; emit only deviations.
        The learning it ends is reported once more (`reports`)."""
        with self._lock:
            if self._confirmed.get(cgroup_id) == Mode.MONITOR and (
                self._monitored.get(cgroup_id) == learned
            ):
                return
            current = self._leaf(cgroup_id)
            if current is not None and self._confirmed.get(cgroup_id) == Mode.LEARN:
                self._final[cgroup_id] = self._read(cgroup_id, current)
            leaf = self._learning.Leaf()
            leaf.mode = Mode.MONITOR
            leaf.execd = int(execd)
            leaf.start = int(current is not None and self._seen(cgroup_id, current))
            for nr in learned:
                if 0 <= nr < NR_MAX:
                    leaf.post[nr] = 1
            if not self._write(cgroup_id, leaf):
                return
            self._provisional.pop(cgroup_id, None)
            self._confirmed[cgroup_id] = Mode.MONITOR
            self._monitored[cgroup_id] = learned
            self._gate()

    def stop(self, cgroup_id: int) -> None:
        """Stop learning or monitoring this cgroup but keep tracking it; a learned set is
        reported once more (`reports`)."""
        with self._lock:
            current = self._leaf(cgroup_id)
            if current is not None:
                if self._confirmed.get(cgroup_id) == Mode.LEARN:
                    self._final[cgroup_id] = self._read(cgroup_id, current)
                self._delete(cgroup_id)
            self._clear("deviations", cgroup_id)
            self._drop_state(cgroup_id)
            self._gate()

    def forget(self, cgroup_id: int) -> None:
        """Stop tracking, learning and monitoring this cgroup (it is gone); drops its
        de-duplication state. A provisional set is held a while for a target's late claim."""
        with self._lock:
            current = self._leaf(cgroup_id)
            if current is not None and cgroup_id not in self._confirmed:
                self._hold(self._read(cgroup_id, current))
            if current is not None:
                self._delete(cgroup_id)
            for table in (self._tracked, self._exec_seen):
                key = table.Key(cgroup_id)
                if key in table:
                    del table[key]
            for name in ("open_seen", "flows_seen", "caps_seen", "deviations"):
                self._clear(name, cgroup_id)
            self._drop_state(cgroup_id)
            self._gate()

    def _drop_state(self, cgroup_id: int) -> None:
        self._confirmed.pop(cgroup_id, None)
        self._monitored.pop(cgroup_id, None)
        self._provisional.pop(cgroup_id, None)
        self._start_seen.discard(cgroup_id)

    def _hold(self, read: SyscallSetRead) -> None:
        if len(self._held) >= HELD_MAX:
            del self._held[min(self._held, key=lambda k: self._held[k][0])]
        self._held[read.cgroup_id] = (time.monotonic(), read)

    def adopt(self, cgroup_id: int, cgroup: Path, container: bool) -> None:
        """A tracked cgroup was created at `cgroup` (its directory): a non-container's
        provisional entry (pod or QoS slice, a pod's namespace directory) is removed; a
        container's is kept for `expire`, sys_enter is attached for it, and listeners
        (`subscribe`) are told, so the learning targets are asked now."""
        with self._lock:
            current = self._leaf(cgroup_id)
            if current is None or cgroup_id in self._confirmed:
                return
            if not container:
                self._delete(cgroup_id)
                self._gate()
                return
            self._provisional.setdefault(cgroup_id, time.monotonic())
            self._gate()
            if not current.start and Group.SYSCALLS in self.loader.attached and never_ran(cgroup):
                self._start_seen.add(cgroup_id)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def expire(self, grace: float) -> int:
        """Drop provisional entries no target claimed within `grace` seconds of their
        notice (all of them with 0), and held sets as old; returns how many entries went."""
        with self._lock:
            now = time.monotonic()
            gone = 0
            for cgroup_id in self._entries():
                if cgroup_id in self._confirmed:
                    continue
                if now - self._provisional.setdefault(cgroup_id, now) >= grace:
                    self._delete(cgroup_id)
                    self._drop_state(cgroup_id)
                    gone += 1
            for cgroup_id, (at, _read) in list(self._held.items()):
                if now - at >= grace:
                    del self._held[cgroup_id]
            self._gate()
            return gone

    def prelearn(self, on: bool) -> None:
        """Keep sys_enter attached while `on` (and a rule learns at mkdir), so a container
        created meanwhile is learned from its first syscall."""
        with self._lock:
            self._prelearn = on
            self._gate()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the ring consumer's thread) when a container cgroup appears."""
        with self._lock:
            self._listeners.append(listener)

    def alive(self, cgroup_id: int) -> bool:
        """True for a tracked cgroup, or a gone one whose provisional set is held."""
        with self._lock:
            return cgroup_id in self._held or self._tracked.Key(cgroup_id) in self._tracked

    def arm_prefix(self, path_prefix: str, learn: bool) -> None:
        """Track (and with `learn`, learn provisionally) every cgroup created under
        `path_prefix` from its mkdir, before its first process runs."""
        raw = path_prefix.encode()
        if len(raw) > PREFIX_MAX or len(self._prefixes) >= PREFIX_SLOTS:
            raise ValueError(f"at most {PREFIX_SLOTS} prefixes of at most {PREFIX_MAX} bytes")
        with self._lock:
            table = self.loader.table("prefixes")
            leaf = table.Leaf()
            leaf.used, leaf.learn = 1, int(learn)
            leaf.s = raw  # a char array takes bytes; memmove on `leaf.s` would write to a copy
            ctypes.memset(leaf.mask, 0xFF, len(raw))
            table[table.Key(len(self._prefixes))] = leaf
            self._prefixes.append((path_prefix, learn))
            self.loader.attach(Group.CGROUPS)
            self._gate()

    def arm_kube(self, learn: bool) -> None:
        """Track (and with `learn`, learn provisionally) every cgroup created with a path
        segment containing `kubepods`: kubelet's, under either driver, in kind or in Docker."""
        with self._lock:
            self._kube, self._kube_learn = True, learn
            self._write_rules(Group.SYSCALLS in self.loader.attached)
            self.loader.attach(Group.CGROUPS)
            self._gate()

    def _write_rules(self, syscalls_on: bool) -> None:
        leaf = self._rules.Leaf()
        leaf.kube, leaf.kube_learn = int(self._kube), int(self._kube_learn)
        leaf.syscalls_on = int(syscalls_on)
        self._rules[self._rules.Key(0)] = leaf

    def _learns_at_mkdir(self) -> bool:
        return self._kube_learn or any(learn for _, learn in self._prefixes)

    def _gate(self) -> None:
        entries = self._entries()
        slots = {cgid & (FILTER_SLOTS - 1) for cgid in entries}
        table = self.loader.table("learn_filter")
        for slot in slots ^ self._filter_slots:
            table[table.Key(slot)] = table.Leaf(int(slot in slots))
        self._filter_slots = slots
        needed = bool(entries) or (self._prelearn and self._learns_at_mkdir())
        attached = Group.SYSCALLS in self.loader.attached
        if needed and not attached:
            self.loader.attach(Group.SYSCALLS)
            self._write_rules(True)  # after attaching: an entry made from now on sees the start
            log.info("sys_enter attached: %s", self._why(entries))
        elif attached and not needed:
            self._write_rules(False)  # before detaching: an entry made now does not
            self.loader.detach(Group.SYSCALLS)
            log.info("sys_enter detached: nothing learns or is monitored")

    def _why(self, entries: list[int]) -> str:
        """Why sys_enter is needed, for the log: what learns, is monitored or pre-learns."""
        modes = [self._confirmed.get(cgroup_id) for cgroup_id in entries]
        counts = [
            (modes.count(Mode.LEARN), "learning"),
            (modes.count(Mode.MONITOR), "monitored"),
            (modes.count(None), "provisional (new, not yet claimed)"),
        ]
        parts = [f"{n} cgroup{'s' if n != 1 else ''} {what}" for n, what in counts if n]
        if not entries:
            parts.append("a workload is in its learning window, so new containers pre-learn")
        return ", ".join(parts)

    @property
    def syscalls_attached(self) -> bool:
        """True while sys_enter is attached (the gauge parallax_agent_sys_enter_attached)."""
        return Group.SYSCALLS in self.loader.attached

    def _delete(self, cgroup_id: int) -> None:
        """Delete a learning entry; its filter slot, which the kernel may have set at mkdir
        without this side knowing, is cleared by the next `_gate` unless still in use."""
        del self._learning[self._learning.Key(cgroup_id)]
        self._filter_slots.add(cgroup_id & (FILTER_SLOTS - 1))

    def _entries(self) -> list[int]:
        return [_int(k) for k, _v in self._learning.items_lookup_batch()]

    def _leaf(self, cgroup_id: int) -> Any:
        return self._learning.get(self._learning.Key(cgroup_id))

    def _write(self, cgroup_id: int, leaf: Any) -> bool:
        try:
            self._learning[self._learning.Key(cgroup_id)] = leaf
        except Exception:  # bcc raises a bare Exception when the map is full
            self._lost(LOSS_LEARN, "learning", cgroup_id)
            return False
        return True

    def _seen(self, cgroup_id: int, leaf: Any) -> bool:
        return bool(leaf.start) or cgroup_id in self._start_seen

    def _lost(self, which: int, table: str, cgroup_id: int) -> None:
        self._user_losses[which] += 1
        log.warning(
            "cgroup %d is not %s: the `%s` map is full; raise its size in agent/probes",
            cgroup_id,
            "tracked" if which == LOSS_TRACK else "learned",
            table,
        )

    def _clear(self, name: str, cgroup_id: int) -> None:
        table = self.loader.table(name)
        for key in [k for k in table if k.cgid == cgroup_id]:
            del table[key]

    def _read(self, cgroup_id: int, v: Any) -> SyscallSetRead:
        provisional = cgroup_id not in self._confirmed
        return SyscallSetRead(
            cgroup_id,
            Mode(v.mode),
            bool(v.execd),
            _bits(v.pre),
            _bits(v.post),
            start_seen=self._seen(cgroup_id, v),
            provisional=provisional,
        )

    def syscall_sets(self) -> dict[int, SyscallSetRead]:
        """Every learning (also provisional) or monitored cgroup's set, read without deleting
        (cumulative)."""
        with self._lock:
            return {_int(k): self._read(_int(k), v) for k, v in self._learning.items_lookup_batch()}

    def reports(self, only: Iterable[int] | None = None) -> list[SyscallSetRead]:
        """The sets to report now: each claimed learning cgroup's (of `only`, when given), and
        once each, the last set of a learning that ended or of a gone cgroup claimed late."""
        wanted = None if only is None else set(only)
        with self._lock:
            out = [
                read
                for read in self.syscall_sets().values()
                if read.mode == Mode.LEARN
                and not read.provisional
                and (wanted is None or read.cgroup_id in wanted)
            ]
            for cgroup_id in [c for c in self._final if wanted is None or c in wanted]:
                out.append(self._final.pop(cgroup_id))
            return out

    def losses(self) -> CgroupLosses:
        """Cgroups not tracked or not learned because a map was full (kernel and user space)."""
        with self._lock:
            table = self.loader.table("cgroup_losses")
            kernel = [int(table.sum(table.Key(i)).value) for i in (LOSS_TRACK, LOSS_LEARN)]
            marks = self.loader.table("exec_mark_losses")
            unmarked = sum(int(v.value) for v in marks.values())
            return CgroupLosses(
                kernel[0] + self._user_losses[LOSS_TRACK],
                kernel[1] + self._user_losses[LOSS_LEARN],
                unmarked,
            )

    def drops(self) -> dict[int, int]:
        """Ring-buffer drops per event type number, summed over CPUs (non-zero only)."""
        table = self.loader.table("drops")
        sums = {i: int(table.sum(table.Key(i)).value) for i in range(N_TYPES)}
        return {i: n for i, n in sums.items() if n}

    def dedup_counts(self, name: str) -> dict[bytes, int]:
        """A de-duplication map's counts (open_seen, flows_seen, caps_seen, deviations) by the
        bytes of each key, read in batches without deleting."""
        with self._lock:
            table = self.loader.table(name)
            return {bytes(key): _int(value) for key, value in table.items_lookup_batch()}


def _int(key: Any) -> int:
    """A u64 map key as int: bcc hands out ctypes keys or plain ints depending on the call."""
    return int(getattr(key, "value", key))
