"""Exec details read in the kernel through BTF offsets: what fds 0-2 of the new program are
connected to (socket, pipe, file, /dev/null), its working directory, and failed execs with their
errno, path and argv."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from pathlib import Path

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.localpod import local_pod
from agent.record import Session

pytestmark = pytest.mark.ebpf


def _shell_exec(probes: Session, name: str, script: str, **popen: object) -> list[pb.Event]:
    """Run `sh -c script` in its own tracked cgroup; return its exec events once it exited."""
    with local_pod("test", name) as pod:
        probes.control.track(pod.cgroup_id)
        proc = pod.spawn(["/bin/sh", "-c", script], **popen)
        proc.wait(30)
        assert probes.collector.wait_for(
            lambda c: any(e.pid == proc.pid for e in c.events(pod.cgroup_id, "process_exit")),
            timeout=10,
        )
        probes.control.forget(pod.cgroup_id)
        return probes.collector.events(pod.cgroup_id, "exec")


def _top(events: list[pb.Event]) -> pb.Exec:
    return next(e.exec for e in events if e.exec.argv[:2] == ["/bin/sh", "-c"])


def test_socket_stdin_and_stdout(probes: Session) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        events = _shell_exec(probes, "sock", "true", stdin=theirs.fileno(), stdout=theirs.fileno())
    shell = _top(events)
    assert shell.stdin_kind == pb.FILE_DESCRIPTOR_KIND_SOCKET
    assert shell.stdout_kind == pb.FILE_DESCRIPTOR_KIND_SOCKET


def test_pipe_file_and_dev_null(probes: Session, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    with open(tmp_path / "out", "wb") as out, open(os.devnull, "wb") as null:
        events = _shell_exec(probes, "pipe", "true", stdin=read_end, stdout=out, stderr=null)
    os.close(read_end)
    os.close(write_end)
    shell = _top(events)
    assert shell.stdin_kind == pb.FILE_DESCRIPTOR_KIND_PIPE
    assert shell.stdout_kind == pb.FILE_DESCRIPTOR_KIND_FILE
    assert shell.stderr_kind == pb.FILE_DESCRIPTOR_KIND_FILE  # /dev/null counts as a file


def test_working_directory(probes: Session, tmp_path: Path) -> None:
    workdir = tmp_path / "deep" / "work"
    workdir.mkdir(parents=True)
    script = "cd / && /bin/true && cd /sys/fs/cgroup && /bin/echo >/dev/null"
    events = _shell_exec(probes, "cwd", script, cwd=workdir)
    assert _top(events).cwd == str(workdir.resolve())
    assert next(e.exec for e in events if e.exec.path == "/bin/true").cwd == "/"
    # /sys and /sys/fs/cgroup are mounts: the walk crosses them at their roots
    assert next(e.exec for e in events if e.exec.path == "/bin/echo").cwd == "/sys/fs/cgroup"


def test_failed_exec(probes: Session) -> None:
    events = _shell_exec(
        probes, "fail", "/nonexistent/tool --flag value; true", stderr=subprocess.DEVNULL
    )
    failed = [e.exec for e in events if e.exec.return_value != 0]
    assert len(failed) == 1
    assert failed[0].path == "/nonexistent/tool"
    assert failed[0].return_value == -errno.ENOENT
    assert list(failed[0].argv) == ["/nonexistent/tool", "--flag", "value"]
    assert _top(events).return_value == 0
