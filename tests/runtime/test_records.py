"""Packed EventRecords: the same batch sent as Event messages and as records gives the same
steps, unattributed counts and event count; every garbled part rejects the whole batch naming
the record; and a real server acknowledges record batches, saying it read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from parallax.runtime.v1 import blind_spot_pb2, event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import platform_pb2

from servicekit.channels import connect
from servicekit.errors import InvalidArgument
from services.runtime import domain, records, wire
from tests.packing import RECORD, pack, packed
from tests.runtime import builders as b
from tests.runtime.server import Clock, runtime_server

NOW = b.T0 + 100


def mixed() -> list[event_pb2.Event]:
    """Every kind, packable or not, with repeats, an unattributed cgroup and cgroup 0."""
    unknown = b.wire_open("/etc/passwd", at=b.T0 + 2)
    unknown.cgroup_id = 77
    unknown.attribution.Clear()
    unknown.attribution.unattributed_reason = event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    no_task = b.wire_flow("10.0.0.9", 443, at=b.T0 + 2.5)
    no_task.cgroup_id = 0
    no_task.attribution.Clear()
    no_task.attribution.unattributed_reason = event_pb2.UNATTRIBUTED_REASON_NO_CGROUP
    return [
        b.wire_syscalls([0, 1, 60], at=b.T0),
        b.wire_event(at=b.T0 + 0.25, process_fork=event_pb2.ProcessFork(child_pid=200)),
        b.wire_exec("/bin/sh", "-c", "true", pid=200, at=b.T0 + 0.5),
        b.wire_open("/etc/app.conf", at=b.T0 + 0.75),
        b.wire_open("/etc/app.conf", at=b.T0 + 1),
        b.wire_open("/tmp/x", flags=0o101, return_value=-13, at=b.T0 + 1.25),
        b.wire_flow("10.0.0.5", 5432, at=b.T0 + 1.5),
        b.wire_event(
            at=b.T0 + 1.75,
            dns_query=event_pb2.DnsQuery(
                query_name="db.shop", query_type="A", answer_addresses=["10.0.0.5"]
            ),
        ),
        b.wire_flow("10.0.0.5", 5432, at=b.T0 + 2),
        unknown,
        no_task,
        b.wire_event(
            at=b.T0 + 3,
            capability_use=event_pb2.CapabilityUse(
                capability_name="CAP_NET_RAW", capability_number=13, allowed=True, count=4
            ),
        ),
        b.wire_event(
            at=b.T0 + 3.25,
            syscall_deviation=event_pb2.SyscallDeviation(
                arch=platform_pb2.ARCHITECTURE_X86_64,
                syscall_number=101,
                syscall_name="ptrace",
                count=2,
            ),
        ),
        b.wire_event(
            pid=200, at=b.T0 + 3.5, process_exit=event_pb2.ProcessExit(exit_code=1, signal=9)
        ),
    ]


def shape(batch: domain.Batch) -> list[tuple[Any, ...]]:
    return [
        (s.event._replace(at=round(s.event.at, 6)), s.count, round(s.last, 6)) for s in batch.steps
    ]


def test_records_and_events_give_the_same_batch() -> None:
    request = b.batch(1, mixed())
    as_events = wire.batch(request, NOW)
    as_records = wire.batch(packed(request), NOW)
    assert len(packed(request).events) == 3  # the syscall set, the exec and the DNS query
    assert shape(as_records) == shape(as_events)
    assert as_records.report.unattributed == as_events.report.unattributed == {(6, 1): 1, (7, 4): 1}
    assert as_records.event_count == as_events.event_count == len(mixed())
    kinds = [type(s.event.payload).__name__ for s in as_records.steps]
    assert kinds.count("FileOpen") == 2  # the repeated open became one step of two
    assert [s.count for s in as_records.steps if type(s.event.payload) is domain.FileOpen] == [2, 1]


def test_records_without_wall_clock_take_the_receive_time() -> None:
    message, referenced = pack([b.wire_open("/etc/app.conf")], unix_offset_ns=0)
    request = b.batch(1, referenced, records=message)
    (step,) = wire.batch(request, NOW).steps
    assert step.event.at == NOW


def garble(request: pb.ReportEventsRequest, **change: Any) -> pb.ReportEventsRequest:
    out = pb.ReportEventsRequest()
    out.CopyFrom(request)
    for name, value in change.items():
        if name in ("cgroups", "strings"):
            del getattr(out.records, name)[:]
            getattr(out.records, name).extend(value)
        elif name == "events":
            del out.events[:]
            out.events.extend(value)
        else:
            setattr(out.records, name, value)
    return out


def record(**fields: int) -> bytes:
    names = "mono cgroup pid ppid uid comm kind bits s1 s2 value n1 n2 count".split()  # noqa: SIM905
    values = {**dict.fromkeys(names, 0), "cgroup": 1000, "kind": 6, "count": 1, **fields}
    return RECORD.pack(*(values[n] for n in names))


BASE = packed(b.batch(1, [b.wire_open("/etc/app.conf"), b.wire_exec("/bin/true")]))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"layout": 0}, "records.layout"),
        ({"data": BASE.records.data + b"\0"}, "records.data"),
        ({"data": record(s1=99)}, "records[0]"),  # a string index past the table
        ({"data": record(comm=99)}, "records[0]"),
        ({"data": record(cgroup=5)}, "records[0]"),  # no attribution for the cgroup
        ({"data": record(kind=3)}, "records[0]"),  # an exec does not travel as a record
        ({"data": record(kind=42)}, "records[0]"),
        ({"data": record(pid=1 << 31)}, "records[0]"),
        ({"data": record(kind=7, s1=0, bits=1 | 1 << 4 | 1 << 8)}, "records[0]"),  # "/etc/..."
        ({"data": record(kind=7, s1=0, bits=9 | 1 << 4 | 1 << 8)}, "records[0]"),
        ({"data": record(mono=1 << 62)}, "records[0]"),  # the year 2116
        ({"data": BASE.records.data + record(kind=0)}, "records"),  # a reference too many
        ({"events": [*BASE.events, b.wire_exec("/bin/false")]}, "records"),  # one without
        ({"cgroups": [*BASE.records.cgroups, *BASE.records.cgroups]}, "records.cgroups[1]"),
        ({"cgroups": [event_pb2.CgroupAttribution(cgroup_id=1000)]}, "records.cgroups[0]"),
        ({"strings": ["x" * 5000]}, "records.strings"),
    ],
)
def test_a_garbled_record_rejects_the_batch(change: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        wire.batch(garble(BASE, **change), NOW)
    assert f"{where}:" in str(caught.value)


def test_records_count_towards_the_batch_limit() -> None:
    data = record() * (domain.MAX_BATCH_EVENTS + 1)
    with pytest.raises(InvalidArgument, match="10001 events"):
        wire.batch(garble(BASE, data=data, events=[]), NOW)


def test_a_full_batch_counts_its_referenced_events_once() -> None:
    """An Event message travels with the record that refers to it: a batch of the limit's
    events, some as Event messages, is the limit, not more."""
    events = (mixed() * (domain.MAX_BATCH_EVENTS // len(mixed()) + 1))[: domain.MAX_BATCH_EVENTS]
    request = packed(b.batch(1, events))
    assert len(request.records.data) // records.SIZE == domain.MAX_BATCH_EVENTS
    assert len(request.events) > 0
    assert wire.batch(request, NOW).event_count == domain.MAX_BATCH_EVENTS


def test_the_record_size_is_the_contract_layout() -> None:
    assert records.SIZE == RECORD.size == 64


def test_a_server_reads_records_and_says_so(tmp_path: Path) -> None:
    first = packed(b.batch(1, [b.wire_exec("/app/server"), b.wire_open("/etc/app.conf")]))
    with (
        runtime_server(tmp_path, Clock(b.T0)) as (running, _),
        connect(running.address, timeout=10) as channel,
    ):
        stub = pb_grpc.RuntimeServiceStub(channel)
        acks = list(stub.ReportEvents(iter([first, first]), timeout=10))
        assert [(a.acknowledged_sequence, a.duplicate, a.records_read) for a in acks] == [
            (1, False, True),
            (1, True, True),
        ]
        ref = b.attribution().workload
        ref.pod = ""
        profile = stub.GetProfile(pb.GetProfileRequest(workload=ref), timeout=5).profile
        assert profile.coverage.events_received == 2
        assert [f.path_pattern for f in profile.file_opens] == ["/etc/app.conf"]
        bad = garble(first, data=record(cgroup=5))
        bad.sequence = 2
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ReportEvents(iter([bad]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        node = stub.ListNodes(pb.ListNodesRequest(), timeout=5).nodes[0]
        assert node.last_acknowledged_sequence == 1 and node.events_received == 2


def test_translations_of_records_are_reused_whatever_the_string_order() -> None:
    plans = wire.Plans()
    events = [b.wire_open("/etc/app.conf"), b.wire_flow("10.0.0.5", 5432)]
    first = wire.batch(packed(b.batch(1, events)), NOW, plans)
    second = wire.batch(packed(b.batch(2, events[::-1])), NOW, plans)  # strings in another order
    assert [s.event.payload for s in first.steps] == [s.event.payload for s in second.steps][::-1]
    assert all(
        a.event.payload is z.event.payload
        for a, z in zip(first.steps, second.steps[::-1], strict=True)
    )
    _, _, known = plans.nodes["n1"]
    assert len(known) == 2


def test_declared_unattributed_counts_are_not_added_to_the_counted_ones() -> None:
    unknown = b.wire_open("/etc/passwd")
    unknown.attribution.Clear()
    unknown.attribution.unattributed_reason = event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    declared = [
        blind_spot_pb2.UnattributedCount(event_type=6, cgroup_id=1000, reason=1, count=2),
        blind_spot_pb2.UnattributedCount(event_type=7, cgroup_id=1000, reason=1, count=5),
    ]
    request = b.batch(1, [unknown, unknown], unattributed_counts=declared)
    for form in (request, packed(request)):
        assert wire.batch(form, NOW).report.unattributed == {(6, 1): 2, (7, 1): 5}


def test_ephemeral_ports_are_not_behaviour() -> None:
    """Connections from fresh local ports and accepts from fresh client ports are one step each,
    in both wire forms, translated once across batches; the service's own port is kept."""
    outbound = [b.wire_flow("10.0.0.5", 5432, at=b.T0 + i) for i in range(3)]
    for i, event in enumerate(outbound):
        event.network_flow.local_port = 40000 + i
    accepted = [b.wire_flow("10.1.0.9", 50000 + i, at=b.T0 + 3 + i) for i in range(3)]
    for event in accepted:
        event.network_flow.direction = event_pb2.FLOW_DIRECTION_ACCEPT
        event.network_flow.local_port = 8080
    plans = wire.Plans()
    for sequence, form in ((1, b.batch), (2, lambda s, e: packed(b.batch(s, e)))):
        steps = wire.batch(form(sequence, outbound + accepted), NOW, plans).steps
        assert [
            (s.event.payload.remote_port, s.event.payload.local_port, s.count) for s in steps
        ] == [
            (5432, 0, 3),
            (0, 8080, 3),
        ]
    again = wire.batch(packed(b.batch(3, accepted[::-1])), NOW, plans).steps
    assert again[0].event.payload is steps[1].event.payload  # a known translation, reused


def test_the_ports_that_are_behaviour_keep_flows_apart() -> None:
    """Records compare without the ephemeral port only: another remote port of a connection or
    another local port of an accept is another step."""
    events = [b.wire_flow("10.0.0.5", port, at=b.T0 + i) for i, port in enumerate((5432, 5433))]
    for local in (8080, 8443):
        accept = b.wire_flow("10.1.0.9", 50000 + local, at=b.T0 + 3)
        accept.network_flow.direction = event_pb2.FLOW_DIRECTION_ACCEPT
        accept.network_flow.local_port = local
        events.append(accept)
    steps = wire.batch(packed(b.batch(1, events + events)), NOW).steps
    assert [(s.event.payload.remote_port, s.event.payload.local_port, s.count) for s in steps] == [
        (5432, 0, 2),
        (5433, 0, 2),
        (0, 8080, 2),
        (0, 8443, 2),
    ]


def udp_send(remote: str, remote_port: int, local_port: int, at: float) -> event_pb2.Event:
    event = b.wire_flow(remote, remote_port, at=at)
    event.network_flow.direction = event_pb2.FLOW_DIRECTION_UDP_SEND
    event.network_flow.protocol = 2
    event.network_flow.local_port = local_port
    return event


def test_udp_replies_from_a_service_port_are_inbound_flows_on_that_port() -> None:
    """A DNS or statsd server answers each client from its own port to the client's ephemeral
    one: one inbound flow on the server's port, not a new peer per query; a client's send from an
    ephemeral port stays an outbound flow to the server's port."""
    replies = [udp_send("10.1.0.9", 40000 + i, 53, b.T0 + i) for i in range(3)]
    queries = [udp_send("10.96.0.10", 53, 45000 + i, b.T0 + 3 + i) for i in range(3)]
    for form in (b.batch(1, replies + queries), packed(b.batch(1, replies + queries))):
        steps = wire.batch(form, NOW).steps
        shown = [
            (s.event.payload.direction, s.event.payload.remote_port, s.event.payload.local_port)
            for s in steps
        ]
        assert shown == [(domain.ACCEPT, 0, 53), (domain.UDP_SEND, 53, 0)]
        assert [s.count for s in steps] == [3, 3]
