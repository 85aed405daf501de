"""A verified command does not outlive what started it: SIGTERM of the policygen service (a real
process) kills a `sleep 600` under verification within the shutdown grace, SIGKILL of it kills
the command through the jail's parent-death signal, a cancelled verification kills its command
and raises Unavailable, and a jail whose parent is gone never execs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from parallax.policygen.v1 import policygen_service_pb2 as pb
from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc

from servicekit.channels import connect
from servicekit.errors import Unavailable
from services.policygen import jail
from services.policygen import verify_seccomp as vs
from tests.processes import eventually, gone, service_process

AUDIT = json.dumps({"defaultAction": "SCMP_ACT_LOG", "syscalls": []})
SLEEP = ("sleep", "600")


def sleeper(parent: int) -> Callable[[], int | None]:
    """A check for the pid of a live `sleep 600` child of `parent` (the jail exec'd it)."""

    def find() -> int | None:
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")[:2]
                ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent and argv == [a.encode() for a in SLEEP]:
                return int(entry.name)
        return None

    return find


def start_verification(address: str) -> tuple[threading.Thread, list[grpc.StatusCode]]:
    """Call VerifySeccompProfile of `sleep 600` in a thread; its status lands in the list."""
    codes: list[grpc.StatusCode] = []

    def call() -> None:
        request = pb.VerifySeccompProfileRequest(
            profile_json=AUDIT, argv=list(SLEEP), timeout=Duration(seconds=600)
        )
        with connect(address, timeout=10) as channel:
            try:
                pb_grpc.PolicygenServiceStub(channel).VerifySeccompProfile(request, timeout=60)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, codes


@pytest.mark.parametrize(
    ("signum", "returncode"),
    [(signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "sigkill"],
)
def test_the_verified_command_dies_with_the_service(
    tmp_path: Path, signum: int, returncode: int
) -> None:
    with service_process("services.policygen", tmp_path) as (process, address):
        thread, codes = start_verification(address)
        pid = eventually(sleeper(process.pid), timeout=30)
        process.send_signal(signum)
        assert process.wait(timeout=20) == returncode
        eventually(lambda: pid if gone(pid) else None, timeout=10)
        thread.join(timeout=30)
        assert codes and codes[0] != grpc.StatusCode.OK


def test_a_cancelled_verification_kills_its_command() -> None:
    cancel = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            vs.verify(vs.VerifyRequest(AUDIT, SLEEP, timeout=600), cancelled=cancel.is_set)
        except Unavailable as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pid = eventually(sleeper(os.getpid()), timeout=30)
    cancel.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and raised
    assert gone(pid)


def test_a_jail_whose_parent_is_gone_never_execs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = [*vs._JAIL, "--parent", "1", "--no-filter", "--", "touch", str(marker)]
    finished = subprocess.run(argv, check=False, timeout=30, capture_output=True)
    assert finished.returncode == jail.EXIT_SETUP
    assert not marker.exists()
