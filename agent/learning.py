"""Keeps the kernel's syscall learning in step with the runtime service (`agent.__main__` starts
it): polls the learning targets for this node and, each round, computes the wanted state of
every cgroup: the target cgroups on this node learn (RECORD; a monitored one goes back to
learning when its workload's learning restarts) or, once the profile is COMPLETE, are monitored
with the learned set, where only deviations leave the kernel; cgroups this sync set before that
no target lists any more stop (they stay tracked). Provisional sets (a new container's, kept
from its mkdir) wait PRELEARN_GRACE seconds for a target to claim them, or none at all when no
workload is in its learning window, in which case sys_enter is not kept attached for new
containers either. A container's creation wakes the sync, so that window is asked about at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import grpc
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.runtime.v1 import workload_pb2

log = logging.getLogger(__name__)

POLL_SECONDS = 10.0
# Polls woken by new containers are at least this far apart: a burst of starts costs one RPC.
MIN_GAP = 1.0
# How long a provisional set waits for a target to claim its cgroup: the container's first events
# must reach the runtime attributed (pod metadata from the API server, the attributor's hold),
# and a poll must then see the cgroup listed.
PRELEARN_GRACE = 60.0


class Modes(Protocol):
    """The part of agent.probes.control.Control this module drives."""

    def learn(self, cgroup_id: int, running: bool = False) -> None:
        """Learn this cgroup's syscall set (claiming a provisional one)."""

    def monitor(self, cgroup_id: int, learned: frozenset[int], execd: bool = True) -> None:
        """Emit only syscalls outside `learned` for this cgroup."""

    def stop(self, cgroup_id: int) -> None:
        """Stop learning or monitoring this cgroup, keeping it tracked."""

    def alive(self, cgroup_id: int) -> bool:
        """Whether the cgroup exists here (or its provisional set is still held)."""

    def prelearn(self, on: bool) -> None:
        """Keep sys_enter attached for containers to come while `on`."""

    def expire(self, grace: float) -> int:
        """Drop provisional sets older than `grace` seconds."""

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` when a container cgroup appears."""


def targets(stub: pb_grpc.RuntimeServiceStub, node: str) -> Iterator[workload_pb2.LearningTarget]:
    """Every learning target with cgroups on `node`, all pages."""
    token = ""
    while True:
        request = pb.ListLearningTargetsRequest(node_name=node, page_size=1000, page_token=token)
        page = stub.ListLearningTargets(request, timeout=10)
        yield from page.learning_targets
        token = page.next_page_token
        if not token:
            return


@dataclass(frozen=True)
class Wanted:
    """What the targets ask of this node: cgroups to learn, cgroups to monitor with their
    learned sets, and whether any workload is in its learning window (on any node)."""

    learn: frozenset[int]
    monitor: dict[int, frozenset[int]]
    window_open: bool


def wanted(
    found: Iterable[workload_pb2.LearningTarget], node: str, alive: Callable[[int], bool]
) -> Wanted:
    """The wanted state of this node's cgroups that exist (`alive`): the runtime lists every
    cgroup a profile ever saw, gone ones included."""
    learn: set[int] = set()
    monitor: dict[int, frozenset[int]] = {}
    window_open = False
    for target in found:
        recording = target.mode != workload_pb2.LEARNING_MODE_MONITOR
        window_open |= recording
        learned = {
            m.container_name: frozenset(m.syscall_numbers) for m in target.monitored_syscalls
        }
        for cgroup in target.cgroups:
            if cgroup.node_name != node or not cgroup.cgroup_id or not alive(cgroup.cgroup_id):
                continue
            if not recording and cgroup.container_name in learned:
                monitor[cgroup.cgroup_id] = learned[cgroup.container_name]
            else:
                learn.add(cgroup.cgroup_id)
    return Wanted(frozenset(learn - monitor.keys()), monitor, window_open)


class LearningSync:
    """Polls the runtime every `every` seconds (and when a container appears) on its own thread
    until stopped."""

    def __init__(
        self,
        stub: pb_grpc.RuntimeServiceStub,
        node: str,
        modes: Modes,
        every: float = POLL_SECONDS,
        grace: float = PRELEARN_GRACE,
    ) -> None:
        self.stub, self.node, self.modes, self.every, self.grace = stub, node, modes, every, grace
        self._set: set[int] = set()  # cgroups this sync set to learn or monitor
        self._window_open: bool | None = None
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="learning-sync", daemon=True)
        modes.subscribe(self._wake.set)

    def poll(self) -> int:
        """One round; returns how many cgroups learn or are monitored. An unreachable runtime
        is logged and changes nothing but the expiry of provisional sets."""
        try:
            found = list(targets(self.stub, self.node))
        except grpc.RpcError as exc:
            log.warning("learning targets unavailable: %s", exc.code())  # type: ignore[attr-defined]
            self.modes.expire(self.grace)
            return 0
        want = wanted(found, self.node, self.modes.alive)
        if want.window_open != self._window_open:
            log.info(
                "%s",
                "a workload is in its learning window: new containers are learned from start"
                if want.window_open
                else "no workload is in its learning window: new containers are not learned",
            )
            self._window_open = want.window_open
        self.modes.prelearn(want.window_open)
        for cgroup_id in want.learn:
            self.modes.learn(cgroup_id, running=True)
        for cgroup_id, learned in want.monitor.items():
            self.modes.monitor(cgroup_id, learned)
        now = want.learn | want.monitor.keys()
        for cgroup_id in self._set - now:
            self.modes.stop(cgroup_id)
        self._set = set(now)
        self.modes.expire(self.grace if want.window_open else 0.0)
        return len(now)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.poll()
            except Exception:  # a failed round must not end learning for the agent's life
                log.exception("a learning sync round failed; the next one retries")
            self._stop.wait(MIN_GAP)

    def start(self) -> None:
        """Poll once now, then on the thread."""
        self.poll()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; waits up to `timeout` seconds for a round in progress, so that none
        touches the probes after they are closed."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
