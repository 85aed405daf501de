"""Syscall sets aggregated in the kernel per cgroup: equal to strace's, gated attachment, the
in-kernel monitor that reports only syscalls outside the learned set, and learning that follows
the runtime's learning targets: a restart learns again, an untargeted cgroup stops, a new
container's set (start-up included) is kept only when a target claims it, and sys_enter stays
detached while nothing learns."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import runtime_service_pb2, workload_pb2

from agent.__main__ import pump
from agent.attributed import Attributed
from agent.attribution.attributor import Attributor
from agent.attribution.pods import PodIndex
from agent.decode import syscall_name, syscall_number
from agent.learning import LearningSync
from agent.localpod import local_pod
from agent.metrics import AgentMetrics
from agent.probes.control import Mode
from agent.probes.loader import Group
from agent.probes.source import KernelSource
from agent.record import Session
from tests.agent.conftest import started_source

pytestmark = pytest.mark.ebpf
NODE = "node-a"
AFTER_EXEC = {"openat", "getdents64", "exit_group"}  # syscalls WORKLOAD surely makes
WORKLOAD = ["/bin/sh", "-c", "ls -la / >/dev/null; cat /etc/hostname /nonexistent 2>/dev/null; id"]


def _names(numbers: frozenset[int]) -> set[str]:
    return {syscall_name(n) for n in numbers}


def _strace_set(tmp_path: Path) -> set[str]:
    out = tmp_path / "strace.txt"
    subprocess.run(
        ["strace", "-f", "-c", "-o", str(out), *WORKLOAD], capture_output=True, timeout=30
    )
    names = set()
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            names.add(parts[-1])
    return names


def test_syscall_set_equals_strace(probes: Session, tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    with local_pod("test", "strace") as pod:
        probes.control.learn(pod.cgroup_id)
        assert pod.spawn(WORKLOAD, stdout=subprocess.DEVNULL).wait(30) == 0
        learned = probes.control.syscall_sets()[pod.cgroup_id]
        probes.control.forget(pod.cgroup_id)
    # The workload's own syscalls start at its exec; before it is our fork's start-up.
    kernel = _names(learned.post) | {"execve"}
    assert kernel - {"exit_group"} == _strace_set(tmp_path) - {"exit_group"}
    assert "" not in _names(learned.numbers)


def test_program_detached_when_nothing_learns(probes: Session) -> None:
    assert Group.SYSCALLS not in probes.loader.attached
    with local_pod("test", "gate") as pod:
        probes.control.learn(pod.cgroup_id)
        assert Group.SYSCALLS in probes.loader.attached
        probes.control.forget(pod.cgroup_id)
    assert Group.SYSCALLS not in probes.loader.attached


def test_monitor_reports_only_deviations(probes: Session) -> None:
    with local_pod("test", "learn") as pod:
        probes.control.learn(pod.cgroup_id)
        assert pod.spawn(["/bin/true"]).wait(30) == 0
        learned = probes.control.syscall_sets()[pod.cgroup_id].numbers
        probes.control.forget(pod.cgroup_id)
    with local_pod("test", "monitor") as pod:
        probes.control.track(pod.cgroup_id)
        probes.control.monitor(pod.cgroup_id, learned)
        assert pod.spawn(["/bin/true"]).wait(30) == 0
        assert pod.spawn(["/bin/ls", "/"], stdout=subprocess.DEVNULL).wait(30) == 0
        marker = pod.spawn(["/bin/sh", "-c", "exit 7"])
        assert marker.wait(30) == 7
        assert probes.collector.wait_for(
            lambda c: any(
                e.process_exit.exit_code == 7 for e in c.events(pod.cgroup_id, "process_exit")
            ),
            timeout=10,
        )
        deviations = probes.collector.events(pod.cgroup_id, "syscall_deviation")
        probes.control.forget(pod.cgroup_id)
    numbers = {e.syscall_deviation.syscall_number for e in deviations}
    assert numbers, "ls uses syscalls /bin/true does not"
    assert not numbers & learned
    assert syscall_number("getdents64") in numbers
    assert len(numbers) == len(deviations), "each deviation is reported once"


def test_monitored_cgroup_sent_back_to_learning_learns_again(probes: Session) -> None:
    true_set = frozenset({syscall_number("exit_group")})
    with local_pod("test", "relearn") as pod:
        probes.control.track(pod.cgroup_id)
        probes.control.monitor(pod.cgroup_id, true_set)
        assert pod.spawn(["/bin/true"]).wait(30) == 0
        probes.control.learn(pod.cgroup_id, running=True)  # the runtime restarted learning
        restarted = probes.control.syscall_sets()[pod.cgroup_id]
        assert pod.spawn(["/bin/ls", "/"], stdout=subprocess.DEVNULL).wait(30) == 0
        relearned = probes.control.syscall_sets()[pod.cgroup_id]
        reported = probes.control.reports({pod.cgroup_id})
        probes.control.forget(pod.cgroup_id)
    assert restarted.mode == Mode.LEARN
    assert restarted.numbers == frozenset(), "a restart learns afresh, not the monitored set"
    assert relearned.mode == Mode.LEARN
    assert syscall_number("getdents64") in relearned.post
    assert not relearned.startup_only, "a running cgroup's syscalls are its own, not start-up"
    assert [r.numbers for r in reported] == [relearned.numbers]


class FakeRuntime:
    """ListLearningTargets as the runtime answers it: `targets` as they are now."""

    def __init__(self) -> None:
        self.targets: list[workload_pb2.LearningTarget] = []

    def ListLearningTargets(
        self, request: runtime_service_pb2.ListLearningTargetsRequest, timeout: float
    ) -> runtime_service_pb2.ListLearningTargetsResponse:
        return runtime_service_pb2.ListLearningTargetsResponse(learning_targets=self.targets)


def target(
    mode: workload_pb2.LearningMode.ValueType,
    cgroup_ids: Iterable[int] = (),
    learned: Iterable[int] = (),
) -> workload_pb2.LearningTarget:
    """A target of container "main" with cgroups on NODE."""
    found = workload_pb2.LearningTarget(name="learningTargets/test/Pod/p", mode=mode)
    for cgroup_id in cgroup_ids:
        found.cgroups.add(node_name=NODE, cgroup_id=cgroup_id, container_name="main")
    if mode == workload_pb2.LEARNING_MODE_MONITOR:
        found.monitored_syscalls.add(container_name="main", syscall_numbers=sorted(learned))
    return found


def test_cgroup_no_longer_targeted_stops_learning(probes: Session) -> None:
    runtime = FakeRuntime()
    sync = LearningSync(runtime, NODE, probes.control, every=3600)  # type: ignore[arg-type]
    with local_pod("test", "untarget") as pod:
        probes.control.track(pod.cgroup_id)
        runtime.targets = [target(workload_pb2.LEARNING_MODE_RECORD, [pod.cgroup_id])]
        assert sync.poll() == 1
        assert Group.SYSCALLS in probes.loader.attached
        assert pod.spawn(["/bin/true"]).wait(30) == 0
        learned = probes.control.syscall_sets()[pod.cgroup_id]
        runtime.targets = []  # opted out
        assert sync.poll() == 0
        after = probes.control.syscall_sets()
        still_tracked = probes.control.alive(pod.cgroup_id)
        last = probes.control.reports({pod.cgroup_id})
        attached = Group.SYSCALLS in probes.loader.attached
        probes.control.forget(pod.cgroup_id)
    assert learned.mode == Mode.LEARN and syscall_number("exit_group") in learned.numbers
    assert pod.cgroup_id not in after, "an untargeted cgroup stops learning"
    assert still_tracked, "and stays tracked"
    assert [r.numbers for r in last] == [learned.numbers], "its set is reported once more"
    assert not attached, "nothing learns: sys_enter detached"


def test_target_moving_between_monitor_and_record(probes: Session) -> None:
    runtime = FakeRuntime()
    sync = LearningSync(runtime, NODE, probes.control, every=3600)  # type: ignore[arg-type]
    with local_pod("test", "modes") as pod:
        probes.control.track(pod.cgroup_id)
        monitored = [syscall_number("exit_group")]
        runtime.targets = [target(workload_pb2.LEARNING_MODE_MONITOR, [pod.cgroup_id], monitored)]
        sync.poll()
        first = probes.control.syscall_sets()[pod.cgroup_id]
        runtime.targets = [target(workload_pb2.LEARNING_MODE_RECORD, [pod.cgroup_id])]
        sync.poll()
        assert pod.spawn(["/bin/true"]).wait(30) == 0
        second = probes.control.syscall_sets()[pod.cgroup_id]
        probes.control.forget(pod.cgroup_id)
    assert (first.mode, first.post) == (Mode.MONITOR, frozenset(monitored))
    assert second.mode == Mode.LEARN and syscall_number("execve") in second.numbers


@pytest.fixture(scope="module")
def source() -> Iterator[KernelSource]:
    """The agent's KernelSource, learning new containers provisionally from their mkdir."""
    yield from started_source()


def _created(source: KernelSource, *cgroup_ids: int, timeout: float = 20) -> None:
    """Read until the cgroups' creations are read (the kernel source has adopted them then)."""
    deadline, waiting = time.monotonic() + timeout, set(cgroup_ids)
    while waiting and time.monotonic() < deadline:
        waiting -= {c.cgroup_id for c in source.read(0.1).cgroups if c.created}
    if waiting:
        raise TimeoutError(f"the creation of cgroups {waiting} was not read in time")


def test_new_container_kept_only_when_a_target_claims_it(source: KernelSource) -> None:
    runtime = FakeRuntime()
    sync = LearningSync(runtime, NODE, source.control, every=3600)  # type: ignore[arg-type]
    runtime.targets = [target(workload_pb2.LEARNING_MODE_RECORD)]  # a workload is learning
    sync.poll()
    assert Group.SYSCALLS in source.loader.attached, "armed for containers to come"
    with local_pod("test", "claimed") as claimed, local_pod("test", "other") as other:
        _created(source, claimed.cgroup_id, other.cgroup_id)
        for pod in (claimed, other):
            assert pod.spawn(WORKLOAD, stdout=subprocess.DEVNULL).wait(30) == 0
        before_claim = source.syscall_sets()
        runtime.targets = [target(workload_pb2.LEARNING_MODE_RECORD, [claimed.cgroup_id])]
        sync.grace = 0.0  # "other" waited long enough for a claim
        sync.poll()
        (reported,) = source.syscall_sets({claimed.cgroup_id, other.cgroup_id})
        learning = source.control.syscall_sets()
        other_tracked = source.control.alive(other.cgroup_id)
    runtime.targets = []
    sync.poll()
    assert not before_claim, "a provisional set is not reported"
    assert reported.cgroup_id == claimed.cgroup_id
    assert reported.syscall_set.start_observed
    assert syscall_number("execve") in reported.syscall_set.syscall_numbers
    assert set(reported.syscall_set.syscall_names) >= AFTER_EXEC
    assert other.cgroup_id not in learning and other_tracked
    assert Group.SYSCALLS not in source.loader.attached, "nothing learns any more"


def test_nothing_learning_keeps_sys_enter_detached(source: KernelSource) -> None:
    runtime = FakeRuntime()
    sync = LearningSync(runtime, NODE, source.control, every=3600)  # type: ignore[arg-type]
    woken: list[bool] = []
    source.control.subscribe(lambda: woken.append(True))
    sync.poll()  # no workload in its learning window
    assert Group.SYSCALLS not in source.loader.attached
    with local_pod("test", "unlearned") as pod:
        _created(source, pod.cgroup_id)
        provisional = source.control.syscall_sets()
        attached_for_it = Group.SYSCALLS in source.loader.attached
        sync.poll()  # what the new container's creation wakes the sync for
        after = source.control.syscall_sets()
        assert pod.spawn(["/bin/true"]).wait(30) == 0
    assert woken, "a new container wakes the learning sync"
    assert attached_for_it and pod.cgroup_id in provisional
    assert pod.cgroup_id not in after
    assert Group.SYSCALLS not in source.loader.attached


class OnePass:
    """The shipper as `pump` uses it, ending the loop after one pass."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def submit(self, events: Attributed) -> None:
        self.stopping.set()

    def set_drops(self, totals: object) -> None:
        pass


def test_sys_enter_gauge_and_log_follow_attach_and_detach(
    source: KernelSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, attributor = AgentMetrics(), Attributor(PodIndex(), tmp_path)

    def gauge_after_a_pass() -> float:
        sender = OnePass()
        pump(source, attributor, sender, metrics, stopping=sender.stopping, poll=0.01)  # type: ignore[arg-type]
        return metrics.value("parallax_agent_sys_enter_attached")

    caplog.set_level(logging.INFO, logger="agent.probes.control")
    source.control.prelearn(False)  # whatever earlier tests of the shared source left on
    source.control.expire(0.0)
    assert gauge_after_a_pass() == 0
    with local_pod("test", "gauge") as pod:
        source.control.learn(pod.cgroup_id)
        learning = gauge_after_a_pass()
        source.control.forget(pod.cgroup_id)
        source.control.expire(0.0)  # entries the kernel made at the pod's mkdirs, unclaimed
        detached = gauge_after_a_pass()
    assert (learning, detached) == (1, 0)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sys_enter")]
    assert said[0].startswith("sys_enter attached: 1 cgroup "), said
    assert said[-1] == "sys_enter detached: nothing learns or is monitored", said
