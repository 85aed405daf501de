"""The runtime service as a real process: an acknowledged batch survives SIGKILL of the service,
and alerts go out as JSON lines on stdout when asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2 as ref_pb2

from servicekit.channels import connect
from tests.processes import read_until
from tests.runtime import builders as b

CART = ref_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart", container="cart")


@contextmanager
def service(data: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    environment = {
        **os.environ,
        "PARALLAX_LISTEN": "127.0.0.1:0",
        "PARALLAX_DATA": str(data),
        "PARALLAX_INSECURE": "true",
        **env,
    }
    for name in ("DATABASE_URL", "PARALLAX_TLS_DIR"):
        environment.pop(name, None)
    with (data / "runtime.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.runtime"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = read_until(process.stdout, b"\n", timeout=30).split(b"\n")[0]
        yield process, json.loads(line)["address"]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def test_acknowledged_batch_survives_sigkill(tmp_path: Path) -> None:
    request = b.batch(1, [b.wire_exec("/app/server"), b.wire_flow("169.254.169.254", 80)])
    with service(tmp_path) as (process, address), connect(address, timeout=10) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        (ack,) = list(stub.ReportEvents(iter([request]), timeout=10))
        assert ack.acknowledged_sequence == 1 and not ack.duplicate
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    with service(tmp_path) as (_, address), connect(address, timeout=10) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        profile = stub.GetProfile(pb.GetProfileRequest(workload=CART), timeout=10).profile
        assert [e.path for e in profile.executables] == ["/app/server"]
        assert [a.rule_id for a in stub.ListAlerts(pb.ListAlertsRequest(), timeout=10).alerts] == [
            "R0005"
        ]
        (again,) = list(stub.ReportEvents(iter([request]), timeout=10))
        assert again.duplicate


def test_alerts_as_json_lines_on_stdout(tmp_path: Path) -> None:
    request = b.batch(1, [b.wire_exec("/usr/bin/apt-get", "install", "curl")])
    with (
        service(tmp_path, PARALLAX_ALERTS_STDOUT="true") as (process, address),
        connect(address, timeout=10) as channel,
    ):
        list(pb_grpc.RuntimeServiceStub(channel).ReportEvents(iter([request]), timeout=10))
        assert process.stdout is not None
        line = read_until(process.stdout, b"}\n", timeout=10).split(b"\n")[0]
    alert = json.loads(line)
    assert (
        alert["ruleId"] == "R0011" and alert["workload"]["name"] == "cart" and alert["count"] == 1
    )
