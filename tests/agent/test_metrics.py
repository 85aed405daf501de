"""The agent's Prometheus metrics: counted from events and cumulative drop totals, and served
over real HTTP in the exposition format."""

from __future__ import annotations

import urllib.request

from parallax.runtime.v1 import blind_spot_pb2, event_pb2

from agent.attributed import Attributed
from agent.metrics import AgentMetrics

RING = blind_spot_pb2.DROP_SOURCE_RING_BUFFER


def test_events_counted_by_type_and_unattributed_by_reason() -> None:
    metrics = AgentMetrics()
    unknown = event_pb2.Event(cgroup_id=3, file_open=event_pb2.FileOpen(path="/etc/passwd"))
    unknown.attribution.unattributed_reason = event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    metrics.observe([event_pb2.Event(exec=event_pb2.Exec()), unknown])
    assert metrics.value("parallax_agent_events_total", type="exec") == 1
    assert metrics.value("parallax_agent_events_total", type="file_open") == 1
    unattributed = metrics.value(
        "parallax_agent_unattributed_events_total", type="file_open", reason="unknown_cgroup"
    )
    assert unattributed == 1


def test_compact_records_counted_by_type_and_by_their_cgroups_reason() -> None:
    metrics = AgentMetrics()
    opened, forked = event_pb2.EVENT_TYPE_FILE_OPEN, event_pb2.EVENT_TYPE_PROCESS_FORK
    pod = event_pb2.Attribution(pod_uid="1f2e3d4c-5b6a-4789-8abc-def012345678")
    items = [
        (1, cgroup, 1, 0, 0, "sh", kind, 0, "/x", "", 0, 0, 0, 1)
        for cgroup, kind in [(5, opened), (7, opened), (7, forked), (0, forked), (5, forked)]
    ]
    cgroups = {5: pod, 7: event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP}
    cgroups[0] = event_pb2.UNATTRIBUTED_REASON_NO_CGROUP
    metrics.observe(Attributed([*items, event_pb2.Event(exec=event_pb2.Exec())], cgroups))
    assert metrics.value("parallax_agent_events_total", type="file_open") == 2
    assert metrics.value("parallax_agent_events_total", type="process_fork") == 3
    assert metrics.value("parallax_agent_events_total", type="exec") == 1
    reasons = {
        (kind, reason): metrics.value(
            "parallax_agent_unattributed_events_total", type=kind, reason=reason
        )
        for kind in ("file_open", "process_fork")
        for reason in ("unknown_cgroup", "no_cgroup")
    }
    assert reasons == {
        ("file_open", "unknown_cgroup"): 1,
        ("file_open", "no_cgroup"): 0,
        ("process_fork", "unknown_cgroup"): 1,
        ("process_fork", "no_cgroup"): 1,
    }


def test_drop_totals_advance_by_their_increase_only() -> None:
    metrics = AgentMetrics()
    key = (event_pb2.EVENT_TYPE_NETWORK_FLOW, RING)
    for total in (3, 3, 10):
        metrics.observe_drops({key: total})
    value = metrics.value(
        "parallax_agent_dropped_events_total", type="network_flow", source="ring_buffer"
    )
    assert value == 10


def test_served_over_http() -> None:
    metrics = AgentMetrics()
    metrics.buffer_depth.set(42)
    metrics.batches_resent.inc()
    server, thread = metrics.serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert "parallax_agent_buffer_events 42.0" in text
    assert "parallax_agent_batches_resent_total 1.0" in text
