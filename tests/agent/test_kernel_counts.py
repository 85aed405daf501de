"""The agent's kernel source reports true hit counts for de-duplicated events: the first open of a
path and the first check of a capability leave the kernel as events of count 1, the repeats as
count events (periodically and at the cgroup's removal) whose counts add up to the real number
of calls, none counted twice."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.compact import to_event
from agent.localpod import local_pod
from agent.probes.source import KernelSource
from tests.agent.conftest import started_source

pytestmark = pytest.mark.ebpf

WORKLOAD = """
import os, sys
for _ in range(40):
    open("/etc/hostname").close()
for _ in range(15):
    os.chown(sys.argv[1], 1, -1)
"""


@pytest.fixture(scope="module")
def source() -> Iterator[KernelSource]:
    """The agent's KernelSource: local pods are tracked from their cgroup's creation."""
    yield from started_source(learn_new=False)


def _read_until(source: KernelSource, done: object, timeout: float = 20) -> list[pb.Event]:
    """Events read until a cgroup change or event satisfies `done`, within `timeout` (compact
    records as the Event messages they stand for)."""
    assert callable(done)
    deadline, events = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        read = source.read(0.1)
        found = [to_event(e) if isinstance(e, tuple) else e for e in read.events]
        events.extend(found)
        if any(done(x) for x in [*found, *read.cgroups]):
            return events
    raise TimeoutError("the expected record did not arrive in time")


def _of(events: list[pb.Event], cgroup_id: int) -> list[pb.Event]:
    return [e for e in events if e.cgroup_id == cgroup_id]


def _hits(events: list[pb.Event], cgroup_id: int) -> tuple[list[int], list[int]]:
    mine = _of(events, cgroup_id)
    opens = [
        e.file_open.count
        for e in mine
        if e.WhichOneof("payload") == "file_open" and e.file_open.path == "/etc/hostname"
    ]
    chowns = [
        e.capability_use.count
        for e in mine
        if e.WhichOneof("payload") == "capability_use"
        and e.capability_use.capability_name == "CAP_CHOWN"
    ]
    return opens, chowns


def test_counts_add_up(source: KernelSource, tmp_path: Path) -> None:
    target = tmp_path / "owned"
    target.touch()
    read: list[pb.Event] = []  # what the main loop reads: events, then the report at rmdir
    reported: list[pb.Event] = []  # the periodic reports, asked for after runs 1 and 2
    with local_pod("test", "counts") as pod:
        for run in range(3):
            proc = pod.spawn([sys.executable, "-c", WORKLOAD, str(target)])
            assert proc.wait(30) == 0
            read += _read_until(
                source,
                lambda e, pid=proc.pid: (
                    getattr(e, "pid", 0) == pid and e.WhichOneof("payload") == "process_exit"
                ),
            )
            if run < 2:  # other local pods on the machine are tracked too: keep to ours
                reported += _of(source.counts.report(), pod.cgroup_id)
                assert not _of(source.counts.report(), pod.cgroup_id)  # nothing grew since
    read += _read_until(source, lambda c: getattr(c, "created", True) is False)
    opens, chowns = _hits(read, pod.cgroup_id)
    assert opens == [1, 40]  # the first open, then run 3's at the cgroup's removal
    assert _hits(reported, pod.cgroup_id) == ([39, 40], [14, 15])
    assert sum(chowns) == 16
    assert all(e.pid and e.comm.startswith("python") for e in reported)
