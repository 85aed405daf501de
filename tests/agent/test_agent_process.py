"""The node agent as it runs on a node, end to end: `python -m agent` (real eBPF, mTLS with its
agent certificate) ships to a real runtime service process; a local pod started with
`parallax run` shows up as a profile with its syscalls, execs and opens, attributed to its pod."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2

from servicekit import pki
from servicekit.channels import connect
from servicekit.tls import TlsMaterial
from tests.agent.conftest import ebpf_unavailable
from tests.processes import read_until

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A runtime service and an agent over mTLS; yields the runtime address and the TLS dir."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("node")
    hostname = socket.gethostname()
    pki.init_directory(data / "tls", node=hostname)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    runtime = subprocess.Popen(
        [sys.executable, "-m", "services.runtime"],
        env={
            **base,
            "PARALLAX_LISTEN": "127.0.0.1:0",
            "PARALLAX_DATA": str(data),
            "PARALLAX_TLS_DIR": str(data / "tls" / "runtime"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    agent = None
    try:
        assert runtime.stdout is not None
        address = json.loads(read_until(runtime.stdout, b"\n", timeout=60))["address"]
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent"],
            env={
                **base,
                "PARALLAX_RUNTIME_ADDRESS": address,
                "PARALLAX_NODE_NAME": hostname,
                "PARALLAX_TLS_DIR": str(data / "tls" / f"agent-{hostname}"),
                "PARALLAX_KUBE": "off",
                "PARALLAX_METRICS_PORT": "0",
                "PARALLAX_BATCH_LATENCY": "0.05",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert agent.stderr is not None
        read_until(agent.stderr, b"agent ready", timeout=90)
        threading.Thread(target=agent.stderr.read, daemon=True).start()  # keep the pipe drained
        yield address, data / "tls"
    finally:
        for process in (agent, runtime):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
                for stream in (process.stdout, process.stderr):
                    if stream is not None:
                        stream.close()


def profile_of(
    stub: pb_grpc.RuntimeServiceStub, pod: str, deadline: float
) -> pb.GetProfileResponse:
    """Poll GetProfile until the pod's profile holds its exec, within `deadline` (monotonic)."""
    workload = workload_pb2.WorkloadRef(namespace="e2e", kind="Pod", name=pod, container="main")
    request = pb.GetProfileRequest(workload=workload)
    waiter = threading.Event()
    while True:
        try:
            found = stub.GetProfile(request, timeout=5)
            if any("/cat" in e.path for e in found.profile.executables) and found.profile.syscalls:
                return found
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete profile for e2e/{pod} in time")
        waiter.wait(0.2)  # the agent ships every 50 ms; re-ask until its batch is stored


def test_local_pod_becomes_a_profile(node: tuple[str, Path]) -> None:
    address, tls_dir = node
    pod = f"cart-{os.getpid()}"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "run",
            "--namespace",
            "e2e",
            "--pod",
            pod,
            "--",
            "sh",
            "-c",
            "cat /etc/hostname > /dev/null; ls /nonexistent 2>/dev/null; true",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    reader = TlsMaterial.load(tls_dir / "cli")
    with connect(address, timeout=10, credentials=reader.channel_credentials()) as channel:
        found = profile_of(pb_grpc.RuntimeServiceStub(channel), pod, time.monotonic() + 60).profile
    names = {s.syscall_name for s in found.syscalls}
    assert {"execve", "openat", "exit_group"} <= names
    assert any(f.path_pattern == "/etc/hostname" for f in found.file_opens)
    assert found.coverage.start_observed
    assert found.coverage.events_dropped == 0
