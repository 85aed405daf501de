"""The kernel side as the agent's main loop sees it (`agent.__main__.KernelSource`): one loaded
BPF object with every event group attached, container cgroups tracked (those present at start
and those created later, see below), the ring buffer drained into a queue (one list per drain,
packable events in compact form: agent.compact), and each claimed learning cgroup's cumulative
syscall set and the hit counts of de-duplicated events reported every few seconds and at the
cgroup's removal.

Which new cgroups are tracked: the kernel checks each cgroup_mkdir path (agent/probes/syscalls.c)
for a segment containing `kubepods`, the root kubelet gives pods under the systemd and cgroupfs
drivers alike, wherever the node's own cgroup sits: `/kubepods/...`, `/kubepods.slice/...`,
kind's `/kubelet.slice/kubelet-kubepods.slice/...`, and a node nested in Docker
(`/system.slice/docker-<id>.scope/kubepods/...`). It is the test agent.attribution.paths
applies to attribute a cgroup, so every cgroup attribution can name is tracked from its creation,
with no prefix to configure or to derive from the cgroups present at start (a kubelet started
later, or a first pod, would be missed), and all its descendants (containers' own sub-cgroups)
with it. `parallax run`'s local pods are tracked by the `/parallax/` prefix. A cgroup a rule
matches but the kernel cannot keep (a full map) is counted and reported as a map-full drop.
The exec probe is attached before the rules, so a new cgroup's first exec is always seen and
its capability checks before it are tagged as start-up; containers present at start ran before
the agent and count as exec'd.

Syscall learning follows agent.learning's targets (see agent.probes.control): with `learn_new`,
a new container's cgroup is learned provisionally from its mkdir, so its start-up is in its set
if its workload turns out to be a learning target; its set is reported only once a target
claims it, and dropped otherwise."""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import event_pb2 as pb

from agent.attributed import Item
from agent.attribution import paths
from agent.compact import decode_compact
from agent.decode import ARCH, CgroupChange, dns_transaction, syscall_name
from agent.probes.consumer import Consumer
from agent.probes.control import Control, SyscallSetRead
from agent.probes.counts import CountReport
from agent.probes.dnspairs import DnsPairs
from agent.probes.loader import EVENT_GROUPS, Loader

# cgroup_mkdir path prefixes (relative to the v2 root) whose new cgroups are tracked from
# creation besides kubelet's (any path with a `kubepods` segment): `parallax run`'s local pods.
PREFIXES = ("/parallax/",)
log = logging.getLogger(__name__)
# The kernel's copy of a cgroup_mkdir path, NUL included (agent/probes/syscalls.c).
PATH_BYTES = 256
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
        self.cgroup_root = cgroup_root
        self.control = Control(self.loader)
        self.counts = CountReport(self.control)
        self.dns = DnsPairs()
        self._records: queue.SimpleQueue[list[Item] | CgroupChange] = queue.SimpleQueue()
        self._pending: list[Item] = []  # this drain's events, touched by the consumer only
        self._queued = 0  # events ever queued, written by the consumer thread only
        self._taken = 0  # events ever read, written by `read` only
        self._report_every, self._last_report = report_every, time.monotonic()
        # The exec probe first: a cgroup the rules track from its mkdir must have its first
        # exec seen, or caps.c would take all its capability checks for start-up.
        for group in EVENT_GROUPS:
            self.loader.attach(group)
        self.control.arm_kube(learn=learn_new)
        for prefix in PREFIXES:
            self.control.arm_prefix(prefix, learn=learn_new)
        for cgroup_id, path in existing:
            if is_container(path):
                # A container running before us: its first exec counts as seen. Not a pod slice,
                # which runs nothing itself: its later containers inherit no exec from it.
                self.control.track(cgroup_id, running=learns(path))
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
            if record.created:  # at once, here: sys_enter must be on before its first task
                record = whole_path(self.cgroup_root, record)
                self._adopt(record)
            self._drained()
            self._records.put(record)

    def _adopt(self, change: CgroupChange) -> None:
        where = self.cgroup_root / change.path.lstrip("/")
        try:
            self.control.adopt(change.cgroup_id, where, learns(change.path))
        except Exception:  # the change itself must still reach attribution
            log.exception(
                "cgroup %s was not set up for learning; its syscalls are learned once a "
                "learning target lists it",
                change.path,
            )

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
        if not change.created:
            out.events.extend(self.syscall_sets({change.cgroup_id}))
            out.events.extend(self.counts.report({change.cgroup_id}))
            self.control.forget(change.cgroup_id)
            self.counts.forget(change.cgroup_id)
        out.cgroups.append(change)

    def syscall_sets(self, only: set[int] | None = None) -> list[pb.Event]:
        """One SyscallSet event per claimed learning cgroup (cumulative since its learning
        began), and the last set of each learning that ended."""
        now = Timestamp()
        now.GetCurrentTime()
        return [
            self._syscall_event(read, now) for read in self.control.reports(only) if read.numbers
        ]

    def _syscall_event(self, read: SyscallSetRead, now: Timestamp) -> pb.Event:
        numbers = sorted(read.numbers)
        event = pb.Event(cgroup_id=read.cgroup_id, event_time=now)
        event.syscall_set.arch = ARCH
        event.syscall_set.syscall_numbers.extend(numbers)
        event.syscall_set.syscall_names.extend(syscall_name(n) for n in numbers)
        event.syscall_set.start_observed = read.start_seen
        event.syscall_set.runtime_startup_syscall_numbers.extend(sorted(read.startup_only))
        event.syscall_set.period_end_time.CopyFrom(now)
        return event

    def drops(self) -> Mapping[tuple[int, int], int]:
        """Cumulative drops by (EventType, DropSource): the ring buffer's (kernel type numbers
        are the contract's EventType values), cgroups kept out by a full map, and records the
        agent could not decode."""
        ring = blind_spot_pb2.DROP_SOURCE_RING_BUFFER
        out: dict[tuple[int, int], int] = {
            (kind, ring): n for kind, n in self.control.drops().items()
        }
        # Cgroups a tracking rule matched that a full map kept out, counted as at least one lost
        # event each: all of an untracked cgroup's types, a not-learned one's syscall set.
        full, losses = blind_spot_pb2.DROP_SOURCE_MAP_FULL, self.control.losses()
        if losses.untracked:
            out[(pb.EVENT_TYPE_UNSPECIFIED, full)] = losses.untracked
        if losses.unlearned:
            out[(pb.EVENT_TYPE_SYSCALL_SET, full)] = losses.unlearned
        if losses.unmarked:  # first execs not marked: start-up checks counted as the workload's
            out[(pb.EVENT_TYPE_CAPABILITY_USE, full)] = losses.unmarked
        decode = blind_spot_pb2.DROP_SOURCE_DECODE
        for kind, n in self.consumer.lost().items():  # records the agent could not read
            out[(kind, decode)] = n
        return out

    def close(self) -> None:
        """Stop consuming and detach every program."""
        self.consumer.close()
        self.loader.close()


def learns(path: str) -> bool:
    """Whether the cgroup at `path` is a container's (or a local pod's), the only cgroups whose
    syscalls are learned; pod and QoS slices and a local pod's namespace directory are not."""
    ref = paths.parse(path)
    return isinstance(ref, paths.LocalRef) or (ref is not None and bool(ref.container_id))


def whole_path(root: Path, change: CgroupChange) -> CgroupChange:
    """`change` with its whole path when the kernel's copy was cut at PATH_BYTES (kind nested in
    Docker gives ~320 bytes): found by the cgroup's inode in its parent directory, when the cut
    fell in the last segment. Otherwise `change` as it is."""
    if len(change.path.encode()) < PATH_BYTES - 1:
        return change
    parent = (root / change.path.lstrip("/")).parent
    try:
        with os.scandir(parent) as entries:
            for entry in entries:
                if entry.inode() == change.cgroup_id and entry.is_dir(follow_symlinks=False):
                    path = "/" + os.path.relpath(entry.path, root)
                    return CgroupChange(change.cgroup_id, path, change.created)
    except OSError:  # the cut fell in a parent, or the cgroup is gone already
        pass
    return change
