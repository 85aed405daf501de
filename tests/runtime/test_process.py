"""The runtime service as a real process: an acknowledged batch survives SIGKILL of the service,
so does the webhook delivery of its alert (sent after the restart), and alerts go out as JSON
lines on stdout when asked."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2 as ref_pb2

from servicekit.channels import connect
from tests.processes import read_until, service_process
from tests.runtime import builders as b
from tests.runtime.test_outputs import Receiver

CART = ref_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart", container="cart")


def test_acknowledged_batch_survives_sigkill(tmp_path: Path) -> None:
    request = b.batch(1, [b.wire_exec("/app/server"), b.wire_flow("169.254.169.254", 80)])
    with (
        service_process("services.runtime", tmp_path) as (process, address),
        connect(address, timeout=10) as channel,
    ):
        stub = pb_grpc.RuntimeServiceStub(channel)
        (ack,) = list(stub.ReportEvents(iter([request]), timeout=10))
        assert ack.acknowledged_sequence == 1 and not ack.duplicate
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    with (
        service_process("services.runtime", tmp_path) as (_, address),
        connect(address, timeout=10) as channel,
    ):
        stub = pb_grpc.RuntimeServiceStub(channel)
        profile = stub.GetProfile(pb.GetProfileRequest(workload=CART), timeout=10).profile
        assert [e.path for e in profile.executables] == ["/app/server"]
        assert [a.rule_id for a in stub.ListAlerts(pb.ListAlertsRequest(), timeout=10).alerts] == [
            "R0005"
        ]
        (again,) = list(stub.ReportEvents(iter([request]), timeout=10))
        assert again.duplicate


def test_alerts_as_json_lines_on_stdout(tmp_path: Path) -> None:
    entrypoint = b.wire_exec("/app/server", pid=10)
    install = b.wire_exec("/usr/bin/apt-get", "install", "curl", pid=20, ppid=10)
    request = b.batch(1, [entrypoint, install])
    with (
        service_process("services.runtime", tmp_path, PARALLAX_ALERTS_STDOUT="true") as (
            process,
            address,
        ),
        connect(address, timeout=10) as channel,
    ):
        list(pb_grpc.RuntimeServiceStub(channel).ReportEvents(iter([request]), timeout=10))
        assert process.stdout is not None
        line = read_until(process.stdout, b"}\n", timeout=10).split(b"\n")[0]
    alert = json.loads(line)
    assert (
        alert["ruleId"] == "R0011" and alert["workload"]["name"] == "cart" and alert["count"] == 1
    )


def test_a_webhook_delivery_survives_sigkill(tmp_path: Path) -> None:
    shell = b.wire_exec("/bin/sh", "-i", pid=300, ppid=100, stdin_kind=3)  # a reverse shell
    request = b.batch(1, [b.wire_exec("/app/server"), shell])
    receiver = Receiver([])  # its port is bound, but nothing listens yet
    try:
        with (
            service_process(
                "services.runtime", tmp_path, PARALLAX_ALERT_WEBHOOK_URL=receiver.url
            ) as (process, address),
            connect(address, timeout=10) as channel,
        ):
            (ack,) = list(
                pb_grpc.RuntimeServiceStub(channel).ReportEvents(iter([request]), timeout=10)
            )
            assert ack.acknowledged_sequence == 1
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
        receiver.start()
        with service_process("services.runtime", tmp_path, PARALLAX_ALERT_WEBHOOK_URL=receiver.url):
            received: dict[str, tuple[int, dict[str, Any]]] = {}
            while "R0007" not in received:
                status, body = receiver.bodies.get(timeout=30)
                received[body["ruleId"]] = (status, body)
    finally:
        receiver.stop()
    status, alert = received["R0007"]
    assert status == 200 and alert["severity"] == "CRITICAL" and alert["podNames"] == ["cart-1"]
