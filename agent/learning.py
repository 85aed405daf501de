"""Keeps the kernel's syscall learning in step with the runtime service: polls the learning
targets for this node and puts each target cgroup in learn mode (RECORD) or, once its profile is
COMPLETE, in monitor mode with the learned set, where only deviations leave the kernel."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Protocol

import grpc
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.runtime.v1 import workload_pb2

log = logging.getLogger(__name__)


class Modes(Protocol):
    """The part of agent.probes.control.Control this module drives."""

    def learn(self, cgroup_id: int) -> None:
        """Learn this cgroup's syscall set."""

    def monitor(self, cgroup_id: int, learned: frozenset[int], execd: bool = True) -> None:
        """Emit only syscalls outside `learned` for this cgroup."""


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


def apply(target: workload_pb2.LearningTarget, node: str, modes: Modes) -> int:
    """Set the kernel mode of the target's cgroups on `node`; returns how many were set."""
    learned = {m.container_name: frozenset(m.syscall_numbers) for m in target.monitored_syscalls}
    count = 0
    for cgroup in target.cgroups:
        if cgroup.node_name != node or not cgroup.cgroup_id:
            continue
        if target.mode == workload_pb2.LEARNING_MODE_MONITOR and cgroup.container_name in learned:
            modes.monitor(cgroup.cgroup_id, learned[cgroup.container_name])
        else:
            modes.learn(cgroup.cgroup_id)
        count += 1
    return count


class LearningSync:
    """Polls the runtime every `every` seconds on its own thread until stopped."""

    def __init__(
        self, stub: pb_grpc.RuntimeServiceStub, node: str, modes: Modes, every: float = 10.0
    ) -> None:
        self.stub, self.node, self.modes, self.every = stub, node, modes, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learning-sync", daemon=True)

    def poll(self) -> int:
        """One round; returns how many cgroups were set. An unreachable runtime is logged."""
        try:
            return sum(apply(t, self.node, self.modes) for t in targets(self.stub, self.node))
        except grpc.RpcError as exc:
            log.warning("learning targets unavailable: %s", exc.code())  # type: ignore[attr-defined]
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def start(self) -> None:
        """Poll once now, then on the thread."""
        self.poll()
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
