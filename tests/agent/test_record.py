"""`parallax record -- CMD`: one command recorded from start to exit with no service running, its
profile as pure JSON on stdout (the command's own output goes to stderr), and with `--runtime`
shipped to a real runtime service process, which then holds a profile of the recorded pod."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from parallax.runtime.v1 import profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2

from agent.record import LAUNCH_ONLY
from servicekit.channels import connect
from servicekit.tls import TlsMaterial
from tests.agent.conftest import ebpf_unavailable
from tests.agent.test_agent_process import HOSTNAME, start_runtime, stop
from tests.processes import eventually, service_process

pytestmark = pytest.mark.ebpf
ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _ebpf() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)


def _record(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "record", *args],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def test_record_prints_profile() -> None:
    result = _record("--json", "--", "sh", "-c", "cat /etc/hostname /nope >/dev/null 2>&1; exit 2")
    assert result.returncode == 2, result.stderr
    profile = json.loads(result.stdout)
    assert profile["exit_code"] == 2
    assert profile["pod"].startswith("record/cmd-")
    assert {"execve", "openat", "read", "exit_group"} <= set(profile["syscalls"])
    assert any("cat /etc/hostname /nope" in e for e in profile["execs"])
    assert any(o.startswith("/nope ") for o in profile["failed_opens"])
    assert any(o.startswith("/etc/hostname ") for o in profile["opens"])
    assert profile["drops"] == {}
    assert profile["unacknowledged"] == -1  # not shipped


def test_json_stays_pure_when_the_command_writes_to_stdout() -> None:
    result = _record("--json", "--", "sh", "-c", "echo from-the-command; cat /etc/hostname")
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)  # the command's output is not mixed in
    assert profile["exit_code"] == 0
    assert b"from-the-command" in result.stderr


def test_text_names_what_only_ran_before_the_command_exec() -> None:
    result = _record("--", "/bin/true")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    section = text.split(LAUNCH_ONLY)[1]
    assert "execve" in section.split("execs (")[0]
    assert "runtime start-up" not in text


def _profile(stub: pb_grpc.RuntimeServiceStub, pod: str) -> profile_pb2.Profile | None:
    workload = workload_pb2.WorkloadRef(namespace="record", kind="Pod", name=pod, container="main")
    try:
        found = stub.GetProfile(pb.GetProfileRequest(workload=workload), timeout=5).profile
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            raise
        return None
    return found if found.syscalls else None


def _shipped(address: str, pod: str, tls: Path | None) -> profile_pb2.Profile:
    """Record a command with --runtime (mTLS with this node's agent certificate under `tls`, or
    plaintext) and return the runtime's profile of the recorded pod."""
    script = "cat /etc/hostname >/dev/null; true"
    security = ["--tls-dir", str(tls / f"agent-{HOSTNAME}")] if tls else ["--insecure"]
    args = ["--runtime", address, *security, "--pod", pod, "--json"]
    result = _record(*args, "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout)
    assert recorded["pod"] == f"record/{pod}" and recorded["unacknowledged"] == 0
    reader = TlsMaterial.load(tls / "cli").channel_credentials() if tls else None
    with connect(address, timeout=10, credentials=reader) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        found = eventually(lambda: _profile(stub, pod), timeout=30)
    assert {s.syscall_name for s in found.syscalls} == set(recorded["syscalls"])
    return found


def test_record_ships_to_a_runtime(tmp_path: Path) -> None:
    pod = f"rec-{time.monotonic_ns()}"
    with service_process("services.runtime", tmp_path) as (_, address):
        found = _shipped(address, pod, None)
    assert {"execve", "openat", "exit_group"} <= {s.syscall_name for s in found.syscalls}
    assert found.coverage.start_observed
    assert any(e.path.endswith("/cat") for e in found.executables)
    assert any(f.path_pattern == "/etc/hostname" for f in found.file_opens)


def test_record_ships_over_mtls_as_this_nodes_agent(tmp_path: Path) -> None:
    runtime, address = start_runtime(tmp_path)
    try:
        found = _shipped(address, f"rec-{time.monotonic_ns()}", tmp_path / "tls")
    finally:
        stop(runtime)
    assert any(e.path.endswith("/cat") for e in found.executables)
