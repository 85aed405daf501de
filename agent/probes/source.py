"""The kernel side as the agent's main loop sees it (`agent.__main__.KernelSource`): one loaded
BPF object with every event group attached, container cgroups tracked (those present at start
and those created later under the Kubernetes and local-pod prefixes), the ring buffer drained
into a queue (one list per drain, packable events in compact form: agent.compact), and each
learning cgroup's cumulative syscall set and the hit counts of de-duplicated events reported
every few seconds and at the cgroup's removal."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import event_pb2 as pb

from agent.attributed import Item
from agent.compact import decode_compact
from agent.decode import ARCH, CgroupChange, dns_transaction, syscall_name
from agent.probes.consumer import Consumer
from agent.probes.control import Control, Mode, SyscallSetRead
from agent.probes.counts import CountReport
from agent.probes.dnspairs import DnsPairs
from agent.probes.loader import EVENT_GROUPS, Loader

# cgroup_mkdir paths (relative to the v2 root) whose new cgroups are tracked from creation:
# kubelet's (both cgroup drivers) and `parallax run`'s local pods.
PREFIXES = ("/kubepods", "/parallax/")
MAX_READ = 20_000
# Records drained from the ring but not yet read: beyond this the consumer leaves them in the
# ring (bounded kernel memory, counted drops) rather than in the agent's heap.
MAX_QUEUED = 40_000


@dataclass
class Read:
    """What one `read` returns: decoded events and cgroup changes, in arrival order."""

    events: list[Item] = field(default_factory=list)
    cgroups: list[CgroupChange] = field(default_factory=list)


class KernelSource:
    """Probes for a node: `read`, `drops`, `learn`/`monitor`/`forget` and `close`."""

    def __init__(
        self,
        cgroup_root: Path,
        existing: Iterable[tuple[int, str]],
        is_container: Callable[[str], bool],
        *,
        learn_new: bool = True,
        report_every: float = 5.0,
    ) -> None:
        self.loader = Loader(cgroup_root)
        self.control = Control(self.loader)
        self.counts = CountReport(self.control)
        self.dns = DnsPairs()
        self._records: queue.SimpleQueue[list[Item] | CgroupChange] = queue.SimpleQueue()
        self._pending: list[Item] = []  # this drain's events, touched by the consumer only
        self._queued = 0  # events ever queued, written by the consumer thread only
        self._taken = 0  # events ever read, written by `read` only
        self._created: set[int] = set()
        self._report_every, self._last_report = report_every, time.monotonic()
        for prefix in PREFIXES:
            self.control.arm_prefix(prefix, learn=learn_new)
        for cgroup_id, path in existing:
            if is_container(path):
                self.control.track(cgroup_id)
        for group in EVENT_GROUPS:
            self.loader.attach(group)
        self.consumer = Consumer(self.loader, self._sink, drained=self._drained, room=self._room)
        self.consumer.start()

    def _sink(self, raw: bytes) -> None:
        self.counts.remember(raw)
        record = decode_compact(raw)
        if isinstance(record, tuple):
            self._pending.append(record)
        elif isinstance(record, pb.Event):
            if record.HasField("dns_query"):
                self._pending.extend(self.dns.add(record, *dns_transaction(raw)))
            else:
                self._pending.append(record)
        elif record is not None:  # a cgroup change, queued at its place among the events
            self._drained()
            self._records.put(record)

    def _drained(self) -> None:
        if self._pending:
            self._queued += len(self._pending)
            self._records.put(self._pending)
            self._pending = []

    def _room(self) -> int:
        return MAX_QUEUED - (self._queued + len(self._pending) - self._taken)

    def read(self, timeout: float) -> Read:
        """Wait up to `timeout` for the first record, then take what is queued (bounded)."""
        out = Read()
        try:
            first = self._records.get(timeout=timeout)
        except queue.Empty:
            first = None
        pending = [] if first is None else [first]
        while pending and len(out.events) + len(out.cgroups) < MAX_READ:
            taken = pending.pop()
            if isinstance(taken, list):
                out.events.extend(taken)
                self._taken += len(taken)
            else:
                self._file(taken, out)
            try:
                pending.append(self._records.get_nowait())
            except queue.Empty:
                break
        out.events.extend(self.dns.expire())
        if time.monotonic() - self._last_report >= self._report_every:
            out.events.extend(self.syscall_sets())
            out.events.extend(self.counts.report())
            self._last_report = time.monotonic()
        return out

    def _file(self, change: CgroupChange, out: Read) -> None:
        if change.created:
            self._created.add(change.cgroup_id)
        else:
            out.events.extend(self.syscall_sets({change.cgroup_id}))
            out.events.extend(self.counts.report({change.cgroup_id}))
            self.control.forget(change.cgroup_id)
            self.counts.forget(change.cgroup_id)
            self._created.discard(change.cgroup_id)
        out.cgroups.append(change)

    def syscall_sets(self, only: set[int] | None = None) -> list[pb.Event]:
        """One SyscallSet event per learning cgroup (cumulative since its learning began)."""
        now = Timestamp()
        now.GetCurrentTime()
        return [
            self._syscall_event(read, now)
            for cgroup_id, read in self.control.syscall_sets().items()
            if read.mode == Mode.LEARN and read.numbers and (only is None or cgroup_id in only)
        ]

    def _syscall_event(self, read: SyscallSetRead, now: Timestamp) -> pb.Event:
        numbers = sorted(read.numbers)
        event = pb.Event(cgroup_id=read.cgroup_id, event_time=now)
        event.syscall_set.arch = ARCH
        event.syscall_set.syscall_numbers.extend(numbers)
        event.syscall_set.syscall_names.extend(syscall_name(n) for n in numbers)
        event.syscall_set.start_observed = read.cgroup_id in self._created
        event.syscall_set.runtime_startup_syscall_numbers.extend(sorted(read.startup_only))
        event.syscall_set.period_end_time.CopyFrom(now)
        return event

    def drops(self) -> Mapping[tuple[int, int], int]:
        """Cumulative ring-buffer drops by (EventType, DropSource); kernel type numbers are the
        contract's EventType values."""
        ring = blind_spot_pb2.DROP_SOURCE_RING_BUFFER
        return {(kind, ring): n for kind, n in self.control.drops().items()}

    def close(self) -> None:
        """Stop consuming and detach every program."""
        self.consumer.close()
        self.loader.close()
