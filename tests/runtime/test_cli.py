"""`parallax alerts`, `parallax profile` and `parallax learn` against a real runtime server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from typer.testing import CliRunner

from cli.__main__ import app
from servicekit.channels import connect
from tests.runtime import builders as b
from tests.runtime.server import Clock, runtime_server


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    with runtime_server(tmp_path, Clock(b.T0)) as (running, _):
        with connect(running.address, timeout=10) as channel:
            events = [b.wire_exec("/app/server"), b.wire_flow("169.254.169.254", 80)]
            list(
                pb_grpc.RuntimeServiceStub(channel).ReportEvents(
                    iter([b.batch(1, events)]), timeout=10
                )
            )
        yield running.address


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--insecure"])
    return result.exit_code, result.stdout


def test_alerts_json_lines(address: str) -> None:
    code, out = run("alerts", "--format", "json", "--runtime", address)
    assert code == 0
    (line,) = out.strip().splitlines()
    assert json.loads(line)["ruleId"] == "R0005"


def test_profile_and_learn(address: str) -> None:
    code, out = run("profile", "shop/Deployment/cart", "--runtime", address)
    assert code == 0 and "LEARNING" in out and "/app/server" in out
    code, out = run("learn", "shop/Deployment/cart", "--window", "60", "--runtime", address)
    assert code == 0 and "learning (window 60s)" in out
    code, out = run("learn", "shop/Deployment/cart", "--stop", "--runtime", address)
    assert code == 0 and "not learning" in out
    code, _ = run("profile", "shop/cart", "--runtime", address)
    assert code == 2
