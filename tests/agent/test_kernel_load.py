"""Load: 2000 short-lived execs all captured with no drop, and two workloads at once with no
cross-attribution by cgroup id."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.localpod import local_pod
from agent.probes.loader import release_compiler_pages
from agent.record import Session

pytestmark = pytest.mark.ebpf
N = 2000


def test_2000_execs_all_captured(probes: Session) -> None:
    with local_pod("test", "execs") as pod:
        probes.control.track(pod.cgroup_id)
        script = f"i=0; while [ $i -lt {N} ]; do /bin/true; i=$((i+1)); done"
        assert pod.spawn(["/bin/sh", "-c", script]).wait(120) == 0

        def done(c: object) -> bool:
            return len(probes.collector.events(pod.cgroup_id, "process_exit")) >= N + 1

        assert probes.collector.wait_for(done, timeout=30)
        execs = [
            e for e in probes.collector.events(pod.cgroup_id, "exec") if e.exec.path == "/bin/true"
        ]
        probes.control.forget(pod.cgroup_id)
    assert len(execs) == N
    assert len({e.pid for e in execs}) == N
    assert probes.control.drops() == {}


def test_two_workloads_no_cross_attribution(probes: Session) -> None:
    with local_pod("test", "left") as left, local_pod("test", "right") as right:
        procs = []
        for pod, name in ((left, "left"), (right, "right")):
            probes.control.track(pod.cgroup_id)
            script = (
                "for i in 1 2 3 4 5 6 7 8 9 10; do "
                f"/bin/echo {name} >/dev/null; cat /etc/{name}-$i 2>/dev/null; done"
            )
            procs.append(pod.spawn(["/bin/sh", "-c", script]))
        assert [p.wait(30) for p in procs] == [1, 1]  # the last cat fails
        for pod, proc in zip((left, right), procs, strict=True):
            assert probes.collector.wait_for(
                lambda c, pod=pod, pid=proc.pid: any(
                    e.pid == pid for e in c.events(pod.cgroup_id, "process_exit")
                ),
                timeout=10,
            )
        for pod, name, other in ((left, "left", "right"), (right, "right", "left")):
            events = probes.collector.events(pod.cgroup_id)
            echoes = [
                e
                for e in events
                if e.WhichOneof("payload") == "exec" and e.exec.path == "/bin/echo"
            ]
            assert len(echoes) == 10 and all(e.exec.argv[1] == name for e in echoes)
            paths = {e.file_open.path for e in events if e.WhichOneof("payload") == "file_open"}
            assert not any(other in p for p in paths)
            assert {f"/etc/{name}-{i}" for i in range(1, 11)} <= paths
            probes.control.forget(pod.cgroup_id)


def _private_kb(*prefixes: str) -> int:
    """Resident KB that only this process maps of the shared libraries named `prefixes`.
    MADV_PAGEOUT leaves pages that other processes map too (another agent or BCC tool on the
    machine): those are the page cache's, counted once for all of them, not this process's."""
    total, current = 0, ""
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields[0].endswith(":"):
                private = fields[0] in ("Private_Clean:", "Private_Dirty:")
                if private and Path(current).name.startswith(prefixes):
                    total += int(fields[1])
            else:
                current = fields[5] if len(fields) > 5 else ""
    return total


def test_the_compiler_does_not_stay_resident(probes: Session) -> None:
    assert release_compiler_pages() > 0  # LLVM and clang are mapped: BCC compiled with them
    assert _private_kb("libLLVM", "libclang") < 16 * 1024  # was ~82 MB after a compile
