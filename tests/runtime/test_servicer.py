"""RuntimeService through a real stub to a real server on port 0 with the real interceptor
chain: ingest acks and duplicates, garbled batches (also as raw bytes that do not decode, or past
the batch and transport size limits), profiles, learning targets, alerts with WatchAlerts,
rules, nodes, and the status codes of bad requests."""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from parallax.runtime.v1 import alert_pb2, profile_pb2, workload_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import change_pb2, severity_pb2
from parallax.type.v1 import workload_pb2 as ref_pb2

from servicekit import serve
from servicekit.channels import connect
from servicekit.config import MAX_MESSAGE_BYTES
from services.runtime.domain import MAX_BATCH_BYTES
from tests.processes import eventually
from tests.runtime import builders as b
from tests.runtime.server import Clock, runtime_server

CART = ref_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart", container="cart")
REPORT_EVENTS = "/parallax.runtime.v1.RuntimeService/ReportEvents"


@pytest.fixture
def clock() -> Clock:
    return Clock(b.T0)


@pytest.fixture
def running(tmp_path: Path, clock: Clock) -> Iterator[serve.RunningServer]:
    with runtime_server(tmp_path, clock) as (server, _):
        yield server


@pytest.fixture
def stub(running: serve.RunningServer) -> Iterator[pb_grpc.RuntimeServiceStub]:
    channel = connect(running.address, timeout=10)
    yield pb_grpc.RuntimeServiceStub(channel)
    channel.close()


@pytest.fixture
def exporter(running: serve.RunningServer) -> InMemorySpanExporter:
    """The finished spans of the running server's own tracer provider."""
    found = InMemorySpanExporter()
    running.tracer_provider.add_span_processor(SimpleSpanProcessor(found))
    return found


def report(
    stub: pb_grpc.RuntimeServiceStub, *requests: pb.ReportEventsRequest
) -> list[pb.ReportEventsResponse]:
    return list(stub.ReportEvents(iter(requests), timeout=10))


def code(caught: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return caught.value.code()  # type: ignore[attr-defined,no-any-return]


def test_each_batch_is_acknowledged_and_resends_are_duplicates(
    stub: pb_grpc.RuntimeServiceStub,
) -> None:
    first = b.batch(1, [b.wire_exec("/app/server")])
    second = b.batch(2, [b.wire_open("/etc/app.conf")])
    acks = report(stub, first, second, first)
    assert [(a.acknowledged_sequence, a.duplicate) for a in acks] == [
        (1, False),
        (2, False),
        (1, True),
    ]
    profile = stub.GetProfile(pb.GetProfileRequest(workload=CART), timeout=5).profile
    assert profile.coverage.events_received == 2
    assert [e.path for e in profile.executables] == ["/app/server"]


def test_garbled_batch_ends_the_stream_with_invalid_argument(
    stub: pb_grpc.RuntimeServiceStub,
) -> None:
    good = b.batch(1, [b.wire_exec("/app/server")])
    bad = b.batch(2, [b.wire_exec("/app/server"), b.wire_flow("999.1.1.1", 80)])
    with pytest.raises(grpc.RpcError) as caught:
        report(stub, good, bad)
    assert code(caught) == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].network_flow" in caught.value.details()  # type: ignore[attr-defined]
    nodes = stub.ListNodes(pb.ListNodesRequest(), timeout=5).nodes
    assert nodes[0].last_acknowledged_sequence == 1 and nodes[0].events_received == 1


def send_raw(address: str, *messages: bytes) -> tuple[list[int], grpc.RpcError | None]:
    """Send `messages` as they are on one ReportEvents stream, through a channel without a
    serializer or a send limit of its own; return the acknowledged sequences and the error
    that ended the stream, if any."""
    acked: list[int] = []
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.stream_stream(
            REPORT_EVENTS, response_deserializer=pb.ReportEventsResponse.FromString
        )
        try:
            for response in call(iter(messages), timeout=30):
                acked.append(response.acknowledged_sequence)
        except grpc.RpcError as error:
            return acked, error
    return acked, None


def bad_bytes(kind: str) -> bytes:
    """A second batch for node n1 that the runtime must refuse, as `kind` says."""
    request = b.batch(2, [b.wire_exec("/app/server"), b.wire_open("/etc/app.conf")])
    whole = request.SerializeToString()
    if kind == "random-bytes":
        return random.Random(2).randbytes(len(whole))
    if kind == "truncated":
        return whole[: len(whole) // 2]
    request.agent_version = "v" * (
        MAX_BATCH_BYTES if kind == "past-batch-limit" else MAX_MESSAGE_BYTES
    )
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("kind", "status", "says"),
    [
        ("random-bytes", grpc.StatusCode.INVALID_ARGUMENT, "batch 0 of this stream"),
        ("truncated", grpc.StatusCode.INVALID_ARGUMENT, "are no ReportEventsRequest"),
        ("past-batch-limit", grpc.StatusCode.INVALID_ARGUMENT, f"the limit is {MAX_BATCH_BYTES}"),
        ("past-transport-limit", grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    ],
    ids=["random-bytes", "truncated", "past-batch-limit", "past-transport-limit"],
)
def test_bad_batch_bytes_are_refused_and_change_nothing(
    running: serve.RunningServer,
    stub: pb_grpc.RuntimeServiceStub,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    status: grpc.StatusCode,
    says: str,
) -> None:
    first = b.batch(1, [b.wire_exec("/app/server")]).SerializeToString()
    assert send_raw(running.address, first) == ([1], None)
    before = stub.ListNodes(pb.ListNodesRequest(), timeout=5)
    acked, error = send_raw(running.address, bad_bytes(kind))
    assert acked == [] and error is not None
    assert error.code() == status, error  # type: ignore[attr-defined]
    assert says in error.details()  # type: ignore[attr-defined]
    assert stub.ListNodes(pb.ListNodesRequest(), timeout=5) == before
    eventually(lambda: streams_ended(exporter, 2), timeout=10)  # the handler is done
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the caller's fault


def streams_ended(exporter: InMemorySpanExporter, count: int) -> bool | None:
    ended = [s for s in exporter.get_finished_spans() if s.name == REPORT_EVENTS]
    return True if len(ended) >= count else None


def test_undecodable_batch_named_by_its_place_in_the_stream_and_traced(
    running: serve.RunningServer,
    stub: pb_grpc.RuntimeServiceStub,
    exporter: InMemorySpanExporter,
) -> None:
    first = b.batch(1, [b.wire_exec("/app/server")]).SerializeToString()
    acked, error = send_raw(running.address, first, bad_bytes("truncated"))
    assert acked == [1] and error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    details = error.details()  # type: ignore[attr-defined]
    assert details.startswith("batch rejected, nothing stored: batch 1 of this stream"), details
    (node,) = stub.ListNodes(pb.ListNodesRequest(), timeout=5).nodes
    assert node.last_acknowledged_sequence == 1 and node.events_received == 1
    (span,) = [s for s in exporter.get_finished_spans() if s.name == REPORT_EVENTS]
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.attributes["parallax.agent.id"] == "agent-n1"
    assert span.attributes["k8s.node.name"] == "n1"
    (batch,) = [e for e in span.events if e.name == "batch"]
    assert batch.attributes is not None
    assert (
        batch.attributes["parallax.batch.sequence"],
        batch.attributes["parallax.batch.events"],
    ) == (
        1,
        1,
    )


def test_profile_lookup_errors(stub: pb_grpc.RuntimeServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetProfile(pb.GetProfileRequest(workload=CART), timeout=5)
    assert code(caught) == grpc.StatusCode.NOT_FOUND
    no_container = ref_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetProfile(pb.GetProfileRequest(workload=no_container), timeout=5)
    assert code(caught) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListAlerts(pb.ListAlertsRequest(page_size=-1), timeout=5)
    assert code(caught) == grpc.StatusCode.INVALID_ARGUMENT


def test_learning_targets_record_then_monitor(
    stub: pb_grpc.RuntimeServiceStub, clock: Clock
) -> None:
    workload = ref_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
    set_req = pb.SetLearningRequest(
        workload=workload, enabled=True, learning_window=Duration(seconds=60)
    )
    answer = stub.SetLearning(set_req, timeout=5).workload
    assert answer.learning_enabled and answer.learning_window.seconds == 60
    report(stub, b.batch(1, [b.wire_exec("/app/server"), b.wire_syscalls([0, 1, 3])]))
    (target,) = stub.ListLearningTargets(
        pb.ListLearningTargetsRequest(node_name="n1"), timeout=5
    ).learning_targets
    assert target.mode == workload_pb2.LEARNING_MODE_RECORD
    assert [(c.pod_uid, c.cgroup_id) for c in target.cgroups] == [("uid-cart-1", 1000)]
    clock.now += 61
    (target,) = stub.ListLearningTargets(
        pb.ListLearningTargetsRequest(), timeout=5
    ).learning_targets
    assert target.mode == workload_pb2.LEARNING_MODE_MONITOR
    assert list(target.monitored_syscalls[0].syscall_numbers) == [0, 1, 3]
    profile = stub.GetProfile(pb.GetProfileRequest(workload=CART), timeout=5).profile
    assert profile.state == profile_pb2.PROFILE_STATE_COMPLETE and profile.coverage.start_observed
    listed = stub.ListWorkloads(
        pb.ListWorkloadsRequest(profile_state=profile_pb2.PROFILE_STATE_COMPLETE), timeout=5
    )
    assert [w.name for w in listed.workloads] == ["workloads/shop/Deployment/cart"]


def pump(
    stream: Iterator[pb.WatchAlertsResponse], into: queue.Queue[pb.WatchAlertsResponse]
) -> None:
    try:
        for response in stream:
            into.put(response)
    except grpc.RpcError:
        pass  # the server stops at the end of the test


def test_alerts_list_get_state_and_watch(stub: pb_grpc.RuntimeServiceStub) -> None:
    report(
        stub, b.batch(1, [b.wire_exec("/app/server", pid=100), b.wire_flow("169.254.169.254", 80)])
    )
    responses: queue.Queue[pb.WatchAlertsResponse] = queue.Queue()
    watch = stub.WatchAlerts(
        pb.WatchAlertsRequest(minimum_severity=severity_pb2.SEVERITY_HIGH), timeout=30
    )
    threading.Thread(target=pump, args=(watch, responses), daemon=True).start()
    current = responses.get(timeout=10)
    assert (
        current.change_type == change_pb2.CHANGE_TYPE_CURRENT and current.alert.rule_id == "R0005"
    )
    assert responses.get(timeout=10).change_type == change_pb2.CHANGE_TYPE_SYNCED
    shell = b.wire_exec("/bin/sh", "-i", pid=300, ppid=100, stdin_kind=3)
    report(stub, b.batch(2, [shell, b.wire_flow("169.254.169.254", 80)]))
    changes = {
        (r.change_type, r.alert.rule_id)
        for r in (responses.get(timeout=10), responses.get(timeout=10))
    }
    assert changes == {
        (change_pb2.CHANGE_TYPE_ADDED, "R0007"),
        (change_pb2.CHANGE_TYPE_UPDATED, "R0005"),
    }
    listed = stub.ListAlerts(pb.ListAlertsRequest(rule_ids=["R0007"]), timeout=5).alerts
    (reverse,) = listed
    assert [p.path for p in reverse.process_tree] == ["/app/server", "/bin/sh"]
    assert reverse.workload.pod == "cart-1" and reverse.evidence["stdin_socket"] == "True"
    got = stub.GetAlert(pb.GetAlertRequest(name=reverse.name), timeout=5).alert
    assert got == reverse
    state = pb.SetAlertStateRequest(
        name=reverse.name, state=alert_pb2.ALERT_STATE_RESOLVED, reason="drill"
    )
    assert stub.SetAlertState(state, timeout=5).alert.state == alert_pb2.ALERT_STATE_RESOLVED
    removed = responses.get(timeout=10)
    assert (
        removed.change_type == change_pb2.CHANGE_TYPE_REMOVED and removed.alert.name == reverse.name
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetAlert(pb.GetAlertRequest(name="alerts/nope"), timeout=5)
    assert code(caught) == grpc.StatusCode.NOT_FOUND
    bad = pb.SetAlertStateRequest(name=reverse.name, state=alert_pb2.ALERT_STATE_OPEN)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetAlertState(bad, timeout=5)
    assert code(caught) == grpc.StatusCode.INVALID_ARGUMENT


def test_rules_are_paged(stub: pb_grpc.RuntimeServiceStub) -> None:
    first = stub.ListRules(pb.ListRulesRequest(page_size=5), timeout=5)
    rest = stub.ListRules(
        pb.ListRulesRequest(page_size=50, page_token=first.next_page_token), timeout=5
    )
    ids = [r.rule_id for r in [*first.rules, *rest.rules]]
    assert ids == [f"R{i:04d}" for i in range(1, 12)] and not rest.next_page_token
    assert first.rules[0].requires_complete_profile and first.rules[0].mitre_technique_id


def test_nodes_report_drops_unattributed_and_gaps(stub: pb_grpc.RuntimeServiceStub) -> None:
    from parallax.runtime.v1 import blind_spot_pb2

    gap = blind_spot_pb2.EventGap(
        event_type=0, reason=1, start_time=b.stamp(b.T0 - 5), detail="restart"
    )
    report(stub, b.batch(1, [b.wire_exec("/app/server")], drop_counters=b.drops(4), gaps=[gap]))
    (node,) = stub.ListNodes(pb.ListNodesRequest(), timeout=5).nodes
    assert node.name == "nodes/n1" and node.state == 1
    assert [(d.event_type, d.dropped_total) for d in node.drop_counters] == [(6, 4)]
    assert node.gaps[0].detail == "restart"
