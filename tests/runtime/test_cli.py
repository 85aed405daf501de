"""`parallax alerts`, `parallax profile`, `parallax learn` and `parallax nodes` against a real
runtime server: alerts read page by page (all of them, or --limit N with how many more), with
the latest pod and node of an alert that spread; a profile's coverage figures and every item
category with its marks; a node's drops, unattributed counts and gaps."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import blind_spot_pb2, event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
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


def report(address: str, *batches: pb.ReportEventsRequest) -> None:
    with connect(address, timeout=10) as channel:
        list(pb_grpc.RuntimeServiceStub(channel).ReportEvents(iter(batches), timeout=10))


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


def every_kind_of_item() -> list[event_pb2.Event]:
    """Events giving the cart profile an item of each category, with the marks to show."""
    startup = event_pb2.SyscallSet(
        arch=1,
        syscall_numbers=[0, 165],
        syscall_names=["read", "mount"],
        start_observed=True,
        runtime_startup_syscall_numbers=[165],
    )
    v6 = event_pb2.NetworkFlow(
        direction=1, protocol=1, family=2, remote_address="fd00::7", remote_port=8080, count=1
    )
    return [
        b.wire_event(syscall_set=startup),
        b.wire_event(capability_use=event_pb2.CapabilityUse(
            capability_name="CAP_NET_BIND_SERVICE", capability_number=10, allowed=True, count=3
        )),
        b.wire_event(capability_use=event_pb2.CapabilityUse(
            capability_name="CAP_SYS_ADMIN", capability_number=21, allowed=False, count=1
        )),
        b.wire_event(dns_query=event_pb2.DnsQuery(
            query_name="api.stripe.com", query_type="A", answer_addresses=["10.0.0.9"]
        )),
        b.wire_flow("10.0.0.9", 443),
        b.wire_open("/etc/cart/missing.conf", return_value=-2),
        b.wire_event(network_flow=v6),
    ]  # fmt: skip


def test_profile_table_shows_every_category_with_its_marks(address: str) -> None:
    report(address, b.batch(2, every_kind_of_item()))
    code, out, _ = run("profile", "shop/Deployment/cart", "--runtime", address)
    assert code == 0 and out.count("LEARNING") == 1 and "LEARNING: recording behaviour" in out
    assert "syscalls: 2, 1 only at the runtime's start-up" in out
    assert re.search(r"runtime start-up only\s+x86_64\s+1\s+1\s+mount", out)
    assert re.search(r"workload\s+x86_64\s+1\s+1\s+read", out)
    assert re.search(r"CAP_NET_BIND_SERVICE\s+3\s+0\s+1", out)
    assert re.search(r"CAP_SYS_ADMIN\s+0\s+1\s+1", out)
    assert re.search(r"uid\s+euid\s+mark.*\n\s+0\s+0\s+root\s", out)
    assert re.search(r"api\.stripe\.com\s+10\.0\.0\.9\s+1", out)
    assert re.search(r"/etc/cart/missing\.conf\s+ENOENT \(2\)\s+/app/server\s+1", out)
    assert re.search(r"connect\s+tcp\s+10\.0\.0\.9:443\s+api\.stripe\.com\s+1", out)
    assert re.search(r"connect\s+tcp\s+\[fd00::7\]:8080\s", out) and "fd00::7:8080" not in out
    assert "dns names: 1" in out and "failed opens: 1" in out and "network peers" in out


def test_profile_json_keeps_default_values(address: str) -> None:
    report(address, b.batch(2, every_kind_of_item()))
    code, out, _ = run("profile", "shop/Deployment/cart", "--format", "json", "--runtime", address)
    found = json.loads(out)
    assert code == 0 and found["state"] == "PROFILE_STATE_LEARNING"
    assert {"uid": 0, "euid": 0} in [{k: u[k] for k in ("uid", "euid")} for u in found["userIds"]]
    marks = {s["syscallName"]: s["runtimeStartup"] for s in found["syscalls"]}
    assert marks == {"read": False, "mount": True}
    denied = {c["capabilityName"]: c["deniedCount"] for c in found["capabilities"]}
    assert denied == {"CAP_NET_BIND_SERVICE": "0", "CAP_SYS_ADMIN": "1"}
    assert [d["dnsName"] for d in found["dnsNames"]] == ["api.stripe.com"]
    assert [f["errnos"] for f in found["failedFileOpens"]] == [[2]]
    assert found["coverage"]["observationGaps"] == 0


def blind_spots() -> pb.ReportEventsRequest:
    """A batch of node n1 carrying a drop counter, an unattributed count and a gap."""
    return b.batch(
        2,
        [],
        drop_counters=b.drops(7),
        unattributed_counts=[
            blind_spot_pb2.UnattributedCount(event_type=3, cgroup_id=55, reason=1, count=4)
        ],
        gaps=[
            blind_spot_pb2.EventGap(
                reason=4,
                start_time=b.stamp(b.T0 - 90),
                end_time=b.stamp(b.T0 - 30),
                detail="runtime unreachable; 120 events discarded",
            )
        ],
    )


def test_nodes_table_shows_drops_unattributed_and_gaps(address: str) -> None:
    report(address, blind_spots())
    code, out, err = run("nodes", "--runtime", address)
    assert code == 0 and not err
    assert "n1  reporting, last report 2026-09-21T14:13:20Z" in out
    assert "agent agent-n1 0.1, kernel 6.1 (x86_64), session s1" in out
    assert "events received 2, dropped 7, unattributed 4, gaps 1" in out
    assert re.search(r"file_open\s+ring_buffer\s+7", out)
    assert re.search(r"exec\s+unknown_cgroup\s+4", out) and "gaps: 1, newest first" in out
    assert re.search(
        r"all\s+disconnected\s+2026-09-21T14:11:50Z\s+2026-09-21T14:12:50Z\s+1m0s\s+"
        r"runtime unreachable; 120 events discarded",
        out,
    )


def test_nodes_json(address: str) -> None:
    report(address, blind_spots())
    code, out, _ = run("nodes", "--format", "json", "--runtime", address)
    (node,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and node["nodeName"] == "n1" and node["state"] == "NODE_STATE_REPORTING"
    assert node["dropCounters"] == [
        {
            "eventType": "EVENT_TYPE_FILE_OPEN",
            "source": "DROP_SOURCE_RING_BUFFER",
            "droppedTotal": "7",
        }
    ]
    assert node["unattributedCounts"] == [
        {
            "eventType": "EVENT_TYPE_EXEC",
            "reason": "UNATTRIBUTED_REASON_UNKNOWN_CGROUP",
            "count": "4",
        }
    ]
    (gap,) = node["gaps"]
    assert (
        gap["eventType"] == "EVENT_TYPE_UNSPECIFIED" and gap["reason"] == "GAP_REASON_DISCONNECTED"
    )
    assert gap["detail"] == "runtime unreachable; 120 events discarded"
