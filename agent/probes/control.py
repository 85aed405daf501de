"""The agent's handle on the loaded probes' maps: which cgroups are tracked, learning or monitored,
the cgroup path prefixes learned at mkdir, and reads of syscall sets, de-duplication counts and
drop counters. It keeps the sys_enter program detached while nothing needs it.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import Any

from agent.probes.loader import Group, Loader

NR_MAX = 512
N_TYPES = 18
PREFIX_MAX = 64
PREFIX_SLOTS = 4
FILTER_SLOTS = 65536


class Mode(enum.IntEnum):
    """What the sys_enter program does for a cgroup."""

    LEARN = 1
    MONITOR = 2


@dataclass(frozen=True)
class SyscallSetRead:
    """One cgroup's in-kernel syscall set: before its first exec (runtime start-up) and after."""

    cgroup_id: int
    mode: Mode
    execd: bool
    pre: frozenset[int]
    post: frozenset[int]

    @property
    def numbers(self) -> frozenset[int]:
        """Every syscall seen in learning mode."""
        return self.pre | self.post

    @property
    def startup_only(self) -> frozenset[int]:
        """Syscalls seen only before the first exec: the container runtime's own."""
        return self.pre - self.post


def _bits(array: Any) -> frozenset[int]:
    return frozenset(i for i, v in enumerate(bytes(array)) if v)


class Control:
    """Operations on a Loader's maps; SYSCALLS stays attached only while something learns."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self._learning = loader.table("learning")
        self._tracked = loader.table("tracked")
        self._prefixes: list[tuple[str, bool]] = []
        self._filter_slots: set[int] = set()
        # cgroup_mkdir copies this template into `learning` for cgroups of a learning prefix.
        template = loader.table("zero_state")
        leaf = template.Leaf()
        leaf.mode = Mode.LEARN
        template[template.Key(0)] = leaf

    def track(self, cgroup_id: int) -> None:
        """Record exec, file, network, DNS and capability events of this cgroup."""
        self._tracked[self._tracked.Key(cgroup_id)] = self._tracked.Leaf(1)

    def learn(self, cgroup_id: int) -> None:
        """Start (or keep) learning this cgroup's syscall set; attaches sys_enter."""
        key = self._learning.Key(cgroup_id)
        if key not in self._learning:
            leaf = self._learning.Leaf()
            leaf.mode = Mode.LEARN
            self._learning[key] = leaf
        self._gate()

    def monitor(self, cgroup_id: int, learned: frozenset[int], execd: bool = True) -> None:
        """Compare this cgroup's syscalls in the kernel with `learned`; emit only deviations."""
        leaf = self._learning.Leaf()
        leaf.mode = Mode.MONITOR
        leaf.execd = int(execd)
        for nr in learned:
            if 0 <= nr < NR_MAX:
                leaf.post[nr] = 1
        self._learning[self._learning.Key(cgroup_id)] = leaf
        self._gate()

    def forget(self, cgroup_id: int) -> None:
        """Stop tracking, learning and monitoring this cgroup; drops its de-duplication state."""
        for table in (self._learning, self._tracked):
            key = table.Key(cgroup_id)
            if key in table:
                del table[key]
        for name in ("open_seen", "flows_seen", "caps_seen", "deviations"):
            table = self.loader.table(name)
            for key in [k for k in table if k.cgid == cgroup_id]:
                del table[key]
        self._gate()

    def arm_prefix(self, path_prefix: str, learn: bool) -> None:
        """Track (and with `learn`, learn) every cgroup created under `path_prefix` from its mkdir,
        before its first process runs. Arming learning keeps sys_enter attached."""
        raw = path_prefix.encode()
        if len(raw) > PREFIX_MAX or len(self._prefixes) >= PREFIX_SLOTS:
            raise ValueError(f"at most {PREFIX_SLOTS} prefixes of at most {PREFIX_MAX} bytes")
        table = self.loader.table("prefixes")
        leaf = table.Leaf()
        leaf.used, leaf.learn = 1, int(learn)
        leaf.s = raw  # a char array takes bytes; memmove on `leaf.s` would write to a copy
        ctypes.memset(leaf.mask, 0xFF, len(raw))
        table[table.Key(len(self._prefixes))] = leaf
        self._prefixes.append((path_prefix, learn))
        self.loader.attach(Group.CGROUPS)
        self._gate()

    def _gate(self) -> None:
        slots = {cgid & (FILTER_SLOTS - 1) for cgid in self.syscall_sets()}
        table = self.loader.table("learn_filter")
        for slot in slots ^ self._filter_slots:
            table[table.Key(slot)] = table.Leaf(int(slot in slots))
        self._filter_slots = slots
        needed = len(self._learning) > 0 or any(learn for _, learn in self._prefixes)
        if needed:
            self.loader.attach(Group.SYSCALLS)
        else:
            self.loader.detach(Group.SYSCALLS)

    def syscall_sets(self) -> dict[int, SyscallSetRead]:
        """Every learning or monitored cgroup's set, read without deleting (cumulative)."""
        return {
            _int(k): SyscallSetRead(
                _int(k), Mode(v.mode), bool(v.execd), _bits(v.pre), _bits(v.post)
            )
            for k, v in self._learning.items_lookup_batch()
        }

    def drops(self) -> dict[int, int]:
        """Ring-buffer drops per event type number, summed over CPUs (non-zero only)."""
        table = self.loader.table("drops")
        sums = {i: int(table.sum(table.Key(i)).value) for i in range(N_TYPES)}
        return {i: n for i, n in sums.items() if n}

    def dedup_counts(self, name: str) -> dict[bytes, int]:
        """A de-duplication map's counts (open_seen, flows_seen, caps_seen, deviations) by the
        bytes of each key, read in batches without deleting."""
        table = self.loader.table(name)
        return {bytes(key): _int(value) for key, value in table.items_lookup_batch()}


def _int(key: Any) -> int:
    """A u64 map key as int: bcc hands out ctypes keys or plain ints depending on the call."""
    return int(getattr(key, "value", key))
