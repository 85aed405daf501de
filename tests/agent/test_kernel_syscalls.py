"""Syscall sets aggregated in the kernel per cgroup: equal to strace's, gated attachment, and the
in-kernel monitor that reports only syscalls outside the learned set."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.decode import syscall_name, syscall_number
from agent.localpod import local_pod
from agent.probes.loader import Group
from agent.record import Session

pytestmark = pytest.mark.ebpf
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
