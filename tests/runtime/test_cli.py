"""`parallax alerts`, `parallax profile` and `parallax learn` against a real runtime server:
alerts read page by page (all of them, or --limit N with how many more), with the latest pod
and node of an alert that spread; a profile's coverage figures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from typer.testing import CliRunner

from cli.__main__ import app
from servicekit.channels import connect
from services.runtime.engine import Engine
from services.runtime.rules import BY_ID, Detection
from tests.runtime import builders as b
from tests.runtime.server import Clock, runtime_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    with runtime_server(tmp_path, Clock(b.T0)) as (running, core):
        with connect(running.address, timeout=10) as channel:
            events = [b.wire_exec("/app/server"), b.wire_flow("169.254.169.254", 80)]
            list(
                pb_grpc.RuntimeServiceStub(channel).ReportEvents(
                    iter([b.batch(1, events)]), timeout=10
                )
            )
        yield running.address, core


@pytest.fixture
def address(server: tuple[str, Engine]) -> str:
    return server[0]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--insecure"], env={"COLUMNS": "300"})
    return result.exit_code, result.stdout, result.stderr


def raise_alerts(core: Engine, count: int) -> None:
    """Give the engine `count` more alerts, one package manager path each."""
    with core.lock:
        for n in range(count):
            path = f"/usr/bin/tool-{n}"
            event = b.event(b.exec_(path), at=b.T0 + n)
            core.alerts.record(Detection(BY_ID["R0011"], path, f"{path} ran", {}), event, ())
        core.alerts.flush(b.T0)


def test_alerts_json_lines(address: str) -> None:
    code, out, _ = run("alerts", "--format", "json", "--runtime", address)
    assert code == 0
    (line,) = out.strip().splitlines()
    assert json.loads(line)["ruleId"] == "R0005"


def test_alerts_are_read_past_the_first_page(server: tuple[str, Engine]) -> None:
    address, core = server
    raise_alerts(core, 1200)
    code, out, err = run("alerts", "--format", "json", "--runtime", address)
    names = [json.loads(line)["name"] for line in out.splitlines()]
    assert code == 0 and len(names) == len(set(names)) == 1201 and not err
    code, out, err = run("alerts", "--runtime", address)
    assert code == 0 and out.count("R0011") == 1200 and out.count("R0005") == 1


def test_alerts_limit_says_how_many_more(server: tuple[str, Engine]) -> None:
    address, core = server
    raise_alerts(core, 249)
    code, out, err = run("alerts", "--format", "json", "--limit", "200", "--runtime", address)
    assert code == 0 and len(out.splitlines()) == 200 and "50 more alerts not shown" in err
    code, out, err = run("alerts", "--limit", "250", "--runtime", address)
    assert code == 0 and out.count("R00") == 250 and not err


def test_alerts_show_the_latest_pod_and_node(address: str) -> None:
    later = b.batch(1, [b.wire_flow("169.254.169.254", 80, pod="cart-7")], session="s9")
    later.agent_id, later.node_name = "agent-n9", "n9"
    with connect(address, timeout=10) as channel:
        list(pb_grpc.RuntimeServiceStub(channel).ReportEvents(iter([later]), timeout=10))
    code, out, _ = run("alerts", "--runtime", address)
    assert code == 0 and "cart-7 on n9 (2 pods, 2 nodes)" in out
    code, out, _ = run("alerts", "--format", "json", "--runtime", address)
    alert = json.loads(out)
    assert alert["podNames"] == ["cart-1", "cart-7"] and alert["nodeNames"] == ["n1", "n9"]
    assert alert["latestOccurrence"]["podName"] == "cart-7" and alert["count"] == "2"


def test_profile_and_learn(address: str) -> None:
    code, out, _ = run("profile", "shop/Deployment/cart", "--runtime", address)
    assert code == 0 and "LEARNING" in out and "/app/server" in out
    assert "last new item " in out and "(2026-09-21T14:13:20Z), 0s of it watched" in out
    assert "learning window 1h0m, observed 0s" in out and "observation gaps 0" in out
    code, out, _ = run("learn", "shop/Deployment/cart", "--window", "60", "--runtime", address)
    assert code == 0 and "learning (window 60s)" in out
    code, out, _ = run("learn", "shop/Deployment/cart", "--stop", "--runtime", address)
    assert code == 0 and "not learning" in out
    code, _, _ = run("profile", "shop/cart", "--runtime", address)
    assert code == 2
