"""Packed event records (EventRecords, RECORD_LAYOUT_V1): the layout field by field with its
string table, Event messages kept at their place by type-0 references, one attribution per
cgroup (cgroup 0 and unattributed reasons included) from the attributor's held/expired rules,
records counted in overflow, rejection and unattributed counts, batches kept under 4 MiB, and a
runtime that does not read records: never sent records, or their loss counted and packing off."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from parallax.runtime.v1 import blind_spot_pb2, event_pb2, runtime_service_pb2
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc

from agent.attributed import Attributed, attach
from agent.attribution.attributor import Attributor
from agent.attribution.pods import PodIndex
from agent.compact import Compact, to_event
from agent.decode import BOOT_OFFSET_NS
from agent.metrics import AgentMetrics
from agent.ship.outbox import MAX_BYTES, Outbox
from agent.ship.sender import Sender
from servicekit.channels import connect
from tests.packing import RECORD

TIMEOUT = 20.0
AGENT_BUFFER = blind_spot_pb2.DROP_SOURCE_AGENT_BUFFER
NO_CGROUP = event_pb2.UNATTRIBUTED_REASON_NO_CGROUP
UNKNOWN = event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
FILE_OPEN, FLOW, FORK = (
    event_pb2.EVENT_TYPE_FILE_OPEN,
    event_pb2.EVENT_TYPE_NETWORK_FLOW,
    event_pb2.EVENT_TYPE_PROCESS_FORK,
)
EXIT, CAP, DEVIATION = (
    event_pb2.EVENT_TYPE_PROCESS_EXIT,
    event_pb2.EVENT_TYPE_CAPABILITY_USE,
    event_pb2.EVENT_TYPE_SYSCALL_DEVIATION,
)
CART = event_pb2.Attribution(pod_uid="1f2e3d4c-5b6a-4789-8abc-def012345678", container_id="a" * 64)
CART.workload.namespace, CART.workload.kind, CART.workload.name = "shop", "Deployment", "cart"
CART.workload.pod, CART.workload.container = "cart-1", "app"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def header() -> runtime_service_pb2.ReportEventsRequest:
    return runtime_service_pb2.ReportEventsRequest(
        agent_id="agent-test", node_name="node-test", boot_id="boot", session_id="s1"
    )


def opened(cgroup_id: int, n: int, path: str = "") -> Compact:
    name = path or f"/p/{n}"
    return (10**9 + n, cgroup_id, 100 + n, 1, 0, "cat", FILE_OPEN, 0, name, "", -2, 0, 0, 1)


def exec_event(cgroup_id: int, pid: int) -> event_pb2.Event:
    event = event_pb2.Event(cgroup_id=cgroup_id, pid=pid, exec=event_pb2.Exec(path="/bin/cat"))
    return attach(event, CART)


def packing(clock: Clock | None = None, **bounds: Any) -> Outbox:
    """An outbox whose runtime has acknowledged a batch with records_read."""
    outbox = Outbox(header(), batch_latency=0.0, clock=clock or Clock(), **bounds)
    outbox.add([exec_event(5, 1)])
    first = outbox.seal()
    assert first is not None and not first.request.HasField("records")  # not yet known
    outbox.ack(first.request.sequence, records_read=True)
    assert outbox.packing
    return outbox


def unpacked(request: runtime_service_pb2.ReportEventsRequest) -> list[Compact | event_pb2.Event]:
    """The batch's events in order, read back from its records and Event messages."""
    strings, events = list(request.records.strings), iter(request.events)
    found: list[Compact | event_pb2.Event] = []
    for r in RECORD.iter_unpack(request.records.data):
        if r[6] == 0:
            assert not any(r), "a reference record is all zeros"
            found.append(next(events))
        else:
            found.append((*r[:5], strings[r[5]], *r[6:8], strings[r[8]], strings[r[9]], *r[10:]))
    assert next(events, None) is None, "every Event message has its reference"
    return found


def test_records_layout_strings_references_and_one_attribution_per_cgroup() -> None:
    outbox = packing()
    items: list[Compact | event_pb2.Event] = [
        opened(5, 1, "/etc/hosts"),
        exec_event(5, 2),
        (
            2_000,
            0,
            0,
            0,
            0,
            "",
            FLOW,
            2 | 6 << 4 | 1 << 8,
            "10.0.0.9",
            "10.0.3.7",
            0,
            443,
            51000,
            3,
        ),
        (3_000, 5, 7, 1, 1000, "sh", FORK, 0, "", "", 0, 4242, 0, 1),
        (4_000, 9, 8, 1, 0, "sh", CAP, 1, "CAP_SYS_ADMIN", "", 0, 21, 0, 2),
        (5_000, 5, 4242, 7, 1000, "sh", EXIT, 0, "", "", 3, 9, 0, 1),
        exec_event(9, 3),
        (6_000, 5, 7, 1, 1000, "sh", DEVIATION, 1, "ptrace", "", 0, 101, 0, 4),
        opened(5, 2, "/etc/hosts"),
    ]
    outbox.add(Attributed(items, {5: CART, 0: NO_CGROUP, 9: UNKNOWN, 77: CART}))
    batch = outbox.seal()
    assert batch is not None and batch.size == len(items)
    records = batch.request.records
    assert records.layout == event_pb2.RECORD_LAYOUT_V1
    assert records.unix_offset_ns == BOOT_OFFSET_NS
    assert len(records.data) == 64 * len(items)
    assert unpacked(batch.request) == items
    assert len(set(records.strings)) == len(records.strings)
    assert records.strings[:3] == ["cat", "/etc/hosts", ""]  # first use order, once each
    fields = RECORD.unpack_from(records.data, 2 * 64)
    assert fields[7] == 0x162 and fields[11:] == (443, 51000, 3)
    cgroups = {c.cgroup_id: c.attribution for c in records.cgroups}
    assert [c.cgroup_id for c in records.cgroups] == [0, 5, 9]  # only ids the records use
    assert cgroups[5] == CART
    assert cgroups[0] == event_pb2.Attribution(unattributed_reason=NO_CGROUP)
    assert cgroups[9] == event_pb2.Attribution(unattributed_reason=UNKNOWN)
    counts = [
        (u.event_type, u.cgroup_id, u.reason, u.count) for u in batch.request.unattributed_counts
    ]
    assert counts == [(FLOW, 0, NO_CGROUP, 1), (CAP, 9, UNKNOWN, 1)]


def test_events_only_batch_and_packing_off_send_event_messages() -> None:
    outbox = packing()
    outbox.add([exec_event(5, 2)])
    batch = outbox.seal()
    assert batch is not None and not batch.request.HasField("records")
    off = Outbox(header(), batch_latency=0.0, clock=Clock(), records=False)
    off.ack(0, records_read=True)
    off.add(Attributed([opened(5, 1), opened(0, 2)], {5: CART, 0: NO_CGROUP}))
    sent = off.seal()
    assert sent is not None and not sent.request.HasField("records")
    first, second = sent.request.events
    assert first == attach(to_event(opened(5, 1)), CART)
    assert second.attribution.unattributed_reason == NO_CGROUP
    (count,) = sent.request.unattributed_counts
    assert (count.event_type, count.cgroup_id, count.count) == (FILE_OPEN, 0, 1)


def test_attribution_per_cgroup_with_held_and_expired_records(tmp_path: Path) -> None:
    clock = Clock()
    attributor = Attributor(PodIndex(), tmp_path, hold_seconds=2.0, clock=clock)
    attributor.learn(77, "/parallax/shop/cart")
    entry = '{"namespace": "shop", "pod": "cart", "labels": {}, "container": "main"}'
    (tmp_path / "77.json").write_text(entry)
    ready = attributor.attribute([opened(77, 1), opened(0, 2), opened(8, 3), opened(77, 4)])
    assert ready.items == [opened(77, 1), opened(0, 2), opened(77, 4)]
    assert set(ready.cgroups) == {77, 0} and ready.cgroups[0] == NO_CGROUP
    local = ready.cgroups[77]
    assert isinstance(local, event_pb2.Attribution) and local.workload.pod == "cart"
    assert attributor.held == 1
    clock.now += 2.0
    expired = attributor.tick()
    assert expired.items == [opened(8, 3)] and expired.cgroups == {8: UNKNOWN}
    # Cgroup 8 resolves right after its held record expired, before the batch is sealed: the
    # newer record keeps its pod as an Event message; the expired one stays unattributed.
    attributor.learn(8, "/parallax/shop/cart")
    (tmp_path / "8.json").write_text(entry)
    late = attributor.attribute([opened(8, 5), exec_event(8, 6)])
    assert late.cgroups[8].workload.pod == "cart"  # type: ignore[union-attr]
    expired.extend(late)
    assert expired.cgroups == {8: UNKNOWN}
    assert expired.items[0] == opened(8, 3)
    converted = expired.items[1]
    assert isinstance(converted, event_pb2.Event) and converted.attribution.workload.pod == "cart"
    assert converted.file_open.path == "/p/5"
    outbox = packing(clock)
    outbox.add(ready)
    outbox.add(expired)
    batch = outbox.seal()
    assert batch is not None
    cgroups = {c.cgroup_id: c.attribution for c in batch.request.records.cgroups}
    assert cgroups[8].unattributed_reason == UNKNOWN and cgroups[77].workload.pod == "cart"
    kinds = [e.WhichOneof("payload") for e in batch.request.events]
    assert kinds == ["file_open", "exec"]


def test_unresolved_cgroup_held_within_one_call_keeps_one_attribution(tmp_path: Path) -> None:
    attributor = Attributor(PodIndex(), tmp_path, hold_limit=1, clock=Clock())
    ready = attributor.attribute([opened(8, 1), opened(9, 2), opened(8, 3)])
    assert ready.items == [opened(8, 1), opened(9, 2)]  # each pushed out by the next hold
    assert ready.cgroups == {8: UNKNOWN, 9: UNKNOWN} and attributor.held == 1


def test_overflow_and_rejection_count_records_per_type() -> None:
    clock = Clock()
    outbox = packing(clock, batch_events=10, buffer_events=10)
    items = [opened(5, n) for n in range(8)] + [exec_event(5, 9)]
    items += [(1, 5, 1, 0, 0, "sh", FORK, 0, "", "", 0, 2, 0, 1)] * 3
    assert outbox.add(Attributed(items, {5: CART})) == 2
    assert outbox.drops() == {(FORK, AGENT_BUFFER): 2}
    batch = outbox.seal()
    assert batch is not None and batch.size == 10 and outbox.buffered == 10
    batch.sent = 1
    assert outbox.reject_oldest_sent("bad record") is batch
    assert outbox.buffered == 0
    assert outbox.drops() == {
        (FORK, AGENT_BUFFER): 3,
        (FILE_OPEN, AGENT_BUFFER): 8,
        (event_pb2.EVENT_TYPE_EXEC, AGENT_BUFFER): 1,
    }
    outbox.add([exec_event(5, 10)])
    clock.now += 1.0
    after = outbox.seal()
    assert after is not None
    (rejected,) = [g for g in after.request.gaps if g.reason == blind_spot_pb2.GAP_REASON_REJECTED]
    assert "(10 events) refused by the runtime: bad record" in rejected.detail


def test_batches_of_long_strings_stay_under_the_size_limit() -> None:
    outbox = packing(batch_events=10_000, buffer_events=20_000)
    long = [opened(5, n, f"/{n}/" + "x" * 1000) for n in range(6000)]
    outbox.add(Attributed(long, {5: CART}))
    batches = []
    while (batch := outbox.seal()) is not None:
        batches.append(batch)
    assert len(batches) > 1
    assert all(b.request.ByteSize() <= MAX_BYTES for b in batches)
    assert [i for b in batches for i in unpacked(b.request)] == long


def test_records_acknowledged_without_records_read_are_counted_lost() -> None:
    clock = Clock()
    outbox = packing(clock)
    outbox.add(Attributed([opened(5, 1), exec_event(5, 2), opened(0, 3)], {5: CART, 0: NO_CGROUP}))
    batch = outbox.seal()
    assert batch is not None and batch.request.HasField("records")
    outbox.ack(batch.request.sequence, records_read=False)  # a runtime older than records
    assert not outbox.records and not outbox.packing and outbox.buffered == 0
    assert outbox.drops() == {(FILE_OPEN, AGENT_BUFFER): 2}  # the exec arrived as a message
    outbox.add(Attributed([opened(5, 4)], {5: CART}))
    outbox.ack(0, records_read=True)  # a later runtime: packing stays off for the session
    clock.now += 1.0
    after = outbox.seal()
    assert after is not None and not after.request.HasField("records")
    assert after.request.events[0].file_open.path == "/p/4"
    (gap,) = after.request.gaps
    assert gap.reason == blind_spot_pb2.GAP_REASON_REJECTED
    assert "2 packed records not read by the runtime" in gap.detail
    (counter,) = after.request.drop_counters
    assert (counter.event_type, counter.source, counter.dropped_total) == (
        FILE_OPEN,
        AGENT_BUFFER,
        2,
    )


class Ingest(pb_grpc.RuntimeServiceServicer):
    """A runtime's ReportEvents that keeps each batch and acknowledges it, saying records_read
    as `reads` decides per sequence."""

    def __init__(self, reads: Callable[[int], bool]) -> None:
        self.reads, self.requests = reads, list[runtime_service_pb2.ReportEventsRequest]()
        self._lock = threading.Lock()

    def ReportEvents(self, request_iterator: Any, context: Any) -> Any:
        for request in request_iterator:
            with self._lock:
                self.requests.append(request)
            yield runtime_service_pb2.ReportEventsResponse(
                acknowledged_sequence=request.sequence, records_read=self.reads(request.sequence)
            )


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[int], bool]], tuple[Ingest, str]]]:
    servers: list[grpc.Server] = []

    def start(reads: Callable[[int], bool]) -> tuple[Ingest, str]:
        ingest = Ingest(reads)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_RuntimeServiceServicer_to_server(ingest, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return ingest, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def ship(address: str, *submits: Attributed) -> tuple[AgentMetrics, Outbox]:
    metrics, outbox = AgentMetrics(), Outbox(header(), batch_events=100, batch_latency=0.01)
    with connect(address) as channel:
        sender = Sender(outbox, channel, metrics, ack_timeout=5.0)
        sender.start()
        for submitted in submits:
            sender.submit(submitted)
            assert sender.wait_idle(TIMEOUT)
        assert sender.stop(grace=5)
    return metrics, outbox


def test_runtime_without_records_gets_event_messages_and_loses_nothing(
    serve: Callable[[Callable[[int], bool]], tuple[Ingest, str]],
) -> None:
    ingest, address = serve(lambda _: False)
    first = Attributed([opened(5, n) for n in range(150)], {5: CART})
    second = Attributed([opened(0, n) for n in range(150, 300)], {0: NO_CGROUP})
    metrics, outbox = ship(address, first, second)
    assert not any(r.HasField("records") for r in ingest.requests)
    shipped = [e for r in ingest.requests for e in r.events]
    assert [e.file_open.path for e in shipped] == [f"/p/{n}" for n in range(300)]
    assert all(e.attribution == CART for e in shipped[:150])
    assert outbox.drops() == {}
    assert metrics.value("parallax_agent_events_total", type="file_open") == 300
    unattributed = metrics.value(
        "parallax_agent_unattributed_events_total", type="file_open", reason="no_cgroup"
    )
    assert unattributed == 150


def test_runtime_that_stops_reading_records_makes_the_loss_counted_and_logged_once(
    serve: Callable[[Callable[[int], bool]], tuple[Ingest, str]], caplog: pytest.LogCaptureFixture
) -> None:
    ingest, address = serve(lambda sequence: sequence == 1)  # then an older runtime answers
    warmup = Attributed([exec_event(5, 1)])
    packed = Attributed([opened(5, n) for n in range(40)] + [exec_event(5, 2)], {5: CART})
    after = [Attributed([opened(5, n) for n in range(40, 50)], {5: CART}) for _ in range(2)]
    with caplog.at_level(logging.ERROR, logger="agent.ship.sender"):
        metrics, outbox = ship(address, warmup, packed, *after)
    assert not outbox.records
    assert [r.HasField("records") for r in ingest.requests[:2]] == [False, True]
    assert not any(r.HasField("records") for r in ingest.requests[2:])
    assert sum(len(r.events) for r in ingest.requests[2:]) == 20
    lost = metrics.value(
        "parallax_agent_dropped_events_total", type="file_open", source="agent_buffer"
    )
    assert lost == 40
    gaps = [g for r in ingest.requests for g in r.gaps]
    assert [g.reason for g in gaps] == [blind_spot_pb2.GAP_REASON_REJECTED]
    assert "records_read" in gaps[0].detail
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "packed event records" in errors[0].getMessage()
