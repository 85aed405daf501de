"""The four services as separate processes: health, reflection and graceful stop of each, and
`parallax up` / `parallax status` run as a user would run them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cli.supervisor import SERVICES, Stack
from servicekit.channels import connect
from servicekit.tls import TlsMaterial
from tests.processes import gone, read_until, wait_gone

pytestmark = pytest.mark.slow

FULL_NAMES = {
    "posture": "parallax.posture.v1.PostureService",
    "runtime": "parallax.runtime.v1.RuntimeService",
    "policygen": "parallax.policygen.v1.PolicygenService",
    "correlator": "parallax.correlator.v1.CorrelatorService",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"), base_port=0)
    running.start()
    yield running
    running.stop()


def client(stack: Stack, service: str) -> grpc.Channel:
    """A channel to `service` over mTLS with the CLI's certificate, as `parallax up` issues."""
    tls = TlsMaterial.load(stack.tls_dir / "cli")
    return connect(
        stack.children[service].address, timeout=5, credentials=tls.channel_credentials()
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_serves_health_and_reflection(stack: Stack, service: str) -> None:
    with client(stack, service) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", FULL_NAMES[service]):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in answer.list_services_response.service}
        assert FULL_NAMES[service] in names
        assert "grpc.health.v1.Health" in names


def test_correlator_answers_over_mtls(stack: Stack) -> None:
    from parallax.correlator.v1 import correlator_service_pb2 as pb
    from parallax.correlator.v1 import correlator_service_pb2_grpc as pb_grpc

    with client(stack, "correlator") as channel:
        stub = pb_grpc.CorrelatorServiceStub(channel)
        assert list(stub.ListRisks(pb.ListRisksRequest(), timeout=10).risks) == []
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetWorkloadContext(pb.GetWorkloadContextRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_each_service_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    stack = Stack(tmp_path, base_port=0)
    stack.start()
    try:
        for child in stack.children.values():
            child.process.send_signal(signal.SIGTERM)
        codes = {name: c.process.wait(timeout=20) for name, c in stack.children.items()}
    finally:
        stack.stop()
    assert codes == dict.fromkeys(SERVICES, 0)
    for name in SERVICES:
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "shutting down" in log


@contextlib.contextmanager
def parallax_up(data: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`parallax up` running on `data` with its status table; killed if still running after."""
    up = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--data", str(data), "--base-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert up.stdout is not None
        yield up, read_until(up.stdout, b"Ctrl-C or SIGTERM stops", timeout=60).decode()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()


def test_parallax_up_and_status_then_sigterm_leaves_nothing(tmp_path: Path) -> None:
    parallax = [sys.executable, "-m", "cli"]
    with parallax_up(tmp_path) as (up, table):
        for service in SERVICES:
            assert any(service in line and "SERVING" in line for line in table.splitlines())
        status = subprocess.run(
            [*parallax, "status", "--data", str(tmp_path)],
            capture_output=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert status.returncode == 0, status.stdout.decode()
        assert status.stdout.decode().count("SERVING") == 4
        assert status.stdout.decode().count("mTLS") == 4
        pids = [json.loads(p.read_text())["pid"] for p in (tmp_path / "run").glob("*.json")]
        assert len(pids) == 4
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    assert all(gone(pid) for pid in pids)
    after = subprocess.run(
        [*parallax, "status", "--data", str(tmp_path)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert after.returncode == 1
    assert after.stdout.decode().count("DOWN") == 4


def test_policygen_reads_runtime_profiles_over_mtls(stack: Stack) -> None:
    from parallax.policygen.v1 import policygen_service_pb2 as pb
    from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc
    from parallax.type.v1 import workload_pb2

    workload = workload_pb2.WorkloadRef(
        namespace="shop", kind="Deployment", name="none", container="c"
    )
    with client(stack, "policygen") as channel:
        stub = pb_grpc.PolicygenServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GenerateSeccompProfile(
                pb.GenerateSeccompProfileRequest(workload=workload), timeout=10
            )
    # FAILED_PRECONDITION means policygen reached the runtime (mTLS, reader role) and heard
    # NOT_FOUND; a TLS or role failure would surface as UNAVAILABLE.
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "no runtime profile for shop/Deployment/none/c" in caught.value.details()  # type: ignore[attr-defined]


def test_services_end_with_a_killed_supervisor(tmp_path: Path) -> None:
    with parallax_up(tmp_path) as (up, _):
        pids = [json.loads(p.read_text())["pid"] for p in (tmp_path / "run").glob("*.json")]
        assert len(pids) == 4
        up.kill()  # no chance to stop its children: the kernel tells them (serve.follow_parent)
        up.wait(timeout=30)
    assert all(wait_gone(pid, timeout=30) for pid in pids)


def test_a_service_whose_supervisor_is_already_gone_does_not_start(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PARALLAX_PARENT_PID": "1",  # not this process's parent: the supervisor died first
        "PARALLAX_LISTEN": "127.0.0.1:0",
        "PARALLAX_DATA": str(tmp_path),
        "PARALLAX_INSECURE": "true",
    }
    run = subprocess.run(
        [sys.executable, "-m", "services.posture"], env=env, capture_output=True, timeout=60
    )
    assert run.returncode != 0
    assert b"supervisor (pid 1) is gone" in run.stderr
