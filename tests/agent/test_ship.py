"""Shipping: the outbox's batching, sequencing, acknowledgement and counted overflow as pure
logic; the sender against a stalled runtime process; and against the real runtime service,
batches acknowledged and, across a kill -9 and restart of the runtime, no acknowledged event
lost and none counted twice; a batch refused as invalid or past the message limit discarded with
a REJECTED gap, a momentary RESOURCE_EXHAUSTED answered by sending again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from parallax.runtime.v1 import blind_spot_pb2, event_pb2, runtime_service_pb2
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc

from agent.attributed import Attributed
from agent.metrics import AgentMetrics
from agent.ship.outbox import Outbox
from agent.ship.sender import Sender, backoff
from servicekit.channels import connect
from servicekit.config import MAX_MESSAGE_BYTES
from tests.processes import read_until

TIMEOUT = 20.0
AGENT_BUFFER = blind_spot_pb2.DROP_SOURCE_AGENT_BUFFER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def header(session: str = "s1") -> runtime_service_pb2.ReportEventsRequest:
    return runtime_service_pb2.ReportEventsRequest(
        agent_id="agent-test", node_name="node-test", boot_id="boot", session_id=session
    )


def events(count: int, start: int = 0) -> list[event_pb2.Event]:
    """Exec events attributed to one pod, numbered by pid so that loss shows."""
    found = []
    for n in range(start, start + count):
        e = event_pb2.Event(cgroup_id=5, pid=n + 1, exec=event_pb2.Exec(path="/bin/true"))
        e.attribution.pod_uid = "1f2e3d4c-5b6a-4789-8abc-def012345678"
        ref = e.attribution.workload
        ref.namespace, ref.kind, ref.name, ref.pod, ref.container = (
            "shop", "Deployment", "cart", "cart-1", "app",
        )  # fmt: skip
        found.append(e)
    return found


def test_batches_bounded_in_size_and_latency_numbered_from_one() -> None:
    clock = Clock()
    outbox = Outbox(header(), batch_events=1000, batch_latency=0.2, clock=clock)
    outbox.add(events(2500))
    first, second = outbox.seal(), outbox.seal()
    assert first is not None and second is not None
    assert outbox.seal() is None  # the remaining 500 wait for the latency
    assert outbox.due_in() == pytest.approx(0.2)
    clock.now += 0.2
    third = outbox.seal()
    assert third is not None
    sizes = [len(b.request.events) for b in (first, second, third)]
    assert sizes == [1000, 1000, 500]
    assert [b.request.sequence for b in (first, second, third)] == [1, 2, 3]
    assert all(b.request.session_id == "s1" for b in (first, second, third))
    assert outbox.due_in() == pytest.approx(59.8)  # then only the minute's heartbeat


def test_unacked_batches_resent_in_order_and_acks_counted_once() -> None:
    clock = Clock()
    outbox = Outbox(header(), batch_events=10, batch_latency=0.0, clock=clock)
    outbox.add(events(30))
    while outbox.seal() is not None:
        pass
    assert outbox.ack(2) is not None
    assert outbox.ack(2) is None
    resend = [outbox.next_after(0), outbox.next_after(1), outbox.next_after(3)]
    assert [b.request.sequence if b else None for b in resend] == [1, 3, None]
    assert outbox.buffered == 20
    outbox.ack(1)
    outbox.ack(3)
    assert outbox.idle and outbox.buffered == 0


def test_overflow_is_counted_and_reported_with_a_gap_record() -> None:
    clock = Clock()
    outbox = Outbox(header(), batch_events=10, batch_latency=0.1, buffer_events=20, clock=clock)
    assert outbox.add(events(25)) == 5
    assert outbox.drops() == {(event_pb2.EVENT_TYPE_EXEC, AGENT_BUFFER): 5}
    clock.now += 0.1
    first, second = outbox.seal(), outbox.seal()
    assert first is not None and second is not None
    (gap,) = first.request.gaps
    assert gap.reason == blind_spot_pb2.GAP_REASON_DISCONNECTED
    assert gap.HasField("start_time") and not gap.HasField("end_time")
    (counter,) = first.request.drop_counters
    assert (counter.source, counter.dropped_total) == (AGENT_BUFFER, 5)
    # The peer stays stalled: more drops, but records-only batches do not pile up.
    assert outbox.add(events(7)) == 7
    clock.now += 1.0
    records = outbox.seal()
    assert records is not None and not records.request.events
    assert outbox.add(events(3)) == 3
    clock.now += 1.0
    assert outbox.seal() is None and outbox.due_in() is None
    # The peer acknowledges: the buffer takes events again and the gap ends.
    for sequence in (1, 2, 3):
        outbox.ack(sequence)
    assert outbox.add(events(4)) == 0
    clock.now += 0.1
    resumed = outbox.seal()
    assert resumed is not None and len(resumed.request.events) == 4
    (closed,) = resumed.request.gaps
    assert closed.start_time == gap.start_time and closed.HasField("end_time")
    (total,) = resumed.request.drop_counters
    assert total.dropped_total == 15


def test_kernel_drop_counters_travel_when_changed_and_every_minute() -> None:
    clock = Clock()
    outbox = Outbox(header(), batch_latency=0.1, counter_interval=60.0, clock=clock)
    ring = (event_pb2.EVENT_TYPE_FILE_OPEN, blind_spot_pb2.DROP_SOURCE_RING_BUFFER)
    outbox.set_drops({ring: 3})
    clock.now += 0.1
    batch = outbox.seal()
    assert batch is not None
    assert [(c.event_type, c.dropped_total) for c in batch.request.drop_counters] == [
        (event_pb2.EVENT_TYPE_FILE_OPEN, 3)
    ]
    outbox.ack(batch.request.sequence)
    outbox.set_drops({ring: 3})
    assert outbox.seal() is None
    assert outbox.due_in() == pytest.approx(60.0)
    clock.now += 60.05
    again = outbox.seal()
    assert again is not None and again.request.drop_counters[0].dropped_total == 3


def test_an_idle_agent_still_reports_every_minute() -> None:
    """Counters double as heartbeats: with no event and no drop, a batch still goes out each
    counter_interval (the runtime counts only watched time towards learning windows), and one
    waits for the previous to be acknowledged."""
    clock = Clock()
    outbox = Outbox(header(), counter_interval=60.0, clock=clock)
    assert outbox.seal() is None and outbox.due_in() == pytest.approx(60.0)
    clock.now += 60.0
    beat = outbox.seal()
    assert beat is not None and beat.size == 0 and not beat.request.events
    clock.now += 60.0
    assert outbox.seal() is None  # the previous heartbeat is not acknowledged yet
    outbox.ack(beat.request.sequence)
    again = outbox.seal()
    assert again is not None and again.request.sequence == beat.request.sequence + 1


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_is_exponential_capped_and_jittered(attempt: int) -> None:
    delay = backoff(0.1, 5.0, attempt, random.Random(attempt))
    ceiling = min(5.0, 0.1 * 2**attempt)
    assert ceiling / 2 <= delay <= ceiling


class Runtime:
    """The real runtime service as a separate process, restartable on the same port and data."""

    def __init__(self, data: Path) -> None:
        self.data, self.address = data, "127.0.0.1:0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PARALLAX_LISTEN": self.address,
            "PARALLAX_DATA": str(self.data),
            "PARALLAX_INSECURE": "true",
        }
        with (self.data / "runtime.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.runtime"],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        assert self.process.stdout is not None
        line = read_until(self.process.stdout, b"\n", TIMEOUT).splitlines()[0]
        self.address = json.loads(line)["address"]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    running = Runtime(tmp_path)
    running.data.mkdir(exist_ok=True)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.process.send_signal(signal.SIGCONT)
        running.kill()


def test_stalled_runtime_overflow_counted_and_gap_emitted(runtime: Runtime) -> None:
    assert runtime.process is not None
    runtime.process.send_signal(signal.SIGSTOP)  # a peer that accepts nothing, answers nothing
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=10, batch_latency=0.01, buffer_events=30)
    with connect(runtime.address) as channel:
        sender = Sender(outbox, channel, metrics, ack_timeout=30.0)
        sender.start()
        sender.submit(events(50))
        assert not sender.wait_idle(0.2)
        sender.stop(grace=0.5)
    dropped = metrics.value(
        "parallax_agent_dropped_events_total", type="exec", source="agent_buffer"
    )
    assert dropped == 20
    assert metrics.value("parallax_agent_buffer_events") == 30
    while outbox.seal(flush=True) is not None:  # whatever the stalled stream never pulled
        pass
    pending = [outbox.next_after(n) for n in range(10)]
    gaps = [g for b in pending if b is not None for g in b.request.gaps]
    assert [g.reason for g in gaps][:1] == [blind_spot_pb2.GAP_REASON_DISCONNECTED]


@pytest.fixture
def ingest(runtime: Runtime) -> Runtime:
    """The runtime, once its ReportEvents is built; a skip naming what is missing until then."""
    with connect(runtime.address) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        try:
            list(stub.ReportEvents(iter([]), timeout=5))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                pytest.skip(f"the runtime's ReportEvents is not built yet: {exc.details()}")  # type: ignore[attr-defined]
    return runtime


def events_received(address: str) -> int:
    with connect(address) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        reply = stub.ListNodes(runtime_service_pb2.ListNodesRequest(), timeout=5)
    return sum(n.events_received for n in reply.nodes if n.node_name == "node-test")


def test_batches_acknowledged_by_the_runtime(ingest: Runtime) -> None:
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=100, batch_latency=0.01, buffer_events=10_000)
    with connect(ingest.address) as channel:
        sender = Sender(outbox, channel, metrics)
        sender.start()
        sender.submit(events(1234))
        assert sender.wait_idle(TIMEOUT)
        assert sender.stop(grace=5)
    assert metrics.value("parallax_agent_batches_acked_total") == 13
    assert metrics.value("parallax_agent_events_total", type="exec") == 1234
    assert events_received(ingest.address) == 1234


def test_packed_records_read_by_the_runtime(ingest: Runtime) -> None:
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=100, batch_latency=0.01, buffer_events=10_000)
    opened = event_pb2.EVENT_TYPE_FILE_OPEN
    opens = [
        (10**9 + n, 5, n + 1, 1, 0, "cat", opened, 0, f"/p/{n}", "", -2, 0, 0, 1)
        for n in range(500)
    ]
    pod = events(1)[0].attribution
    with connect(ingest.address) as channel:
        sender = Sender(outbox, channel, metrics)
        sender.start()
        sender.submit(events(10))  # the first acknowledgement says the runtime reads records
        assert sender.wait_idle(TIMEOUT)
        assert outbox.packing
        sender.submit(Attributed([*opens[:250], *events(5, start=10), *opens[250:]], {5: pod}))
        assert sender.wait_idle(TIMEOUT)
        assert sender.stop(grace=5)
    assert outbox.packing and not outbox.drops()
    assert metrics.value("parallax_agent_events_total", type="file_open") == 500
    assert events_received(ingest.address) == 515


def test_runtime_killed_and_restarted_no_acked_event_lost_none_twice(ingest: Runtime) -> None:
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=50, batch_latency=0.01, buffer_events=10_000)
    with connect(ingest.address) as channel:
        sender = Sender(outbox, channel, metrics, ack_timeout=5.0, backoff_range=(0.05, 0.5))
        sender.start()
        sender.submit(events(500))
        assert sender.wait_idle(TIMEOUT)
        sender.submit(events(300, start=500))  # in flight while the runtime dies
        ingest.kill()
        sender.submit(events(200, start=800))  # buffered while it is down
        ingest.start()  # same port, same data directory
        assert sender.wait_idle(TIMEOUT)
        assert sender.stop(grace=5)
    assert metrics.value("parallax_agent_batches_acked_total") == 20
    assert events_received(ingest.address) == 1000


def test_batch_the_runtime_refuses_is_discarded_with_a_gap_not_resent_forever(
    ingest: Runtime,
) -> None:
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=10, batch_latency=0.01, buffer_events=10_000)
    garbled = events(10, start=100)
    garbled[3].exec.argv.extend(["x" * 300])  # past the contract's 256-byte argument limit
    with connect(ingest.address) as channel:
        sender = Sender(outbox, channel, metrics)
        sender.start()
        sender.submit(garbled)  # batch 1: refused as a whole
        assert sender.wait_idle(TIMEOUT)
        sender.submit(events(10))  # batch 2 carries the REJECTED gap and is accepted
        assert sender.wait_idle(TIMEOUT)
        assert sender.stop(grace=5)
    assert events_received(ingest.address) == 10
    dropped = metrics.value(
        "parallax_agent_dropped_events_total", type="exec", source="agent_buffer"
    )
    assert dropped == 10
    with connect(ingest.address) as channel:
        nodes = pb_grpc.RuntimeServiceStub(channel).ListNodes(
            runtime_service_pb2.ListNodesRequest(), timeout=5
        )
    gaps = [g for n in nodes.nodes for g in n.gaps]
    assert any(
        g.reason == blind_spot_pb2.GAP_REASON_REJECTED and "refused" in g.detail for g in gaps
    )


def rejected_gaps(address: str) -> list[blind_spot_pb2.EventGap]:
    with connect(address) as channel:
        nodes = pb_grpc.RuntimeServiceStub(channel).ListNodes(
            runtime_service_pb2.ListNodesRequest(), timeout=5
        )
    return [
        g for n in nodes.nodes for g in n.gaps if g.reason == blind_spot_pb2.GAP_REASON_REJECTED
    ]


def unlimited(address: str) -> grpc.Channel:
    """A channel that sends messages of any size, leaving the limit to the runtime."""
    return grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])


@pytest.mark.parametrize("channel_of", [connect, unlimited], ids=["agent-limit", "runtime-limit"])
def test_batch_past_the_message_limit_is_discarded_with_a_gap_not_resent_forever(
    ingest: Runtime, channel_of: Any
) -> None:
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=10, batch_latency=0.01, buffer_events=10_000)
    (huge,) = events(1, start=100)
    huge.exec.argv.append("x" * MAX_MESSAGE_BYTES)  # one event no gRPC channel carries
    with channel_of(ingest.address) as channel:
        sender = Sender(outbox, channel, metrics)
        sender.start()
        sender.submit([*events(10), huge])  # batch 1 acknowledged, batch 2 refused as a whole
        assert sender.wait_idle(TIMEOUT)
        sender.submit(events(10, start=10))  # batch 3 carries the REJECTED gap and is accepted
        assert sender.wait_idle(TIMEOUT)
        assert sender.stop(grace=5)
    assert events_received(ingest.address) == 20
    assert metrics.value("parallax_agent_stream_reconnects_total") == 1  # refused once, no loop
    dropped = metrics.value(
        "parallax_agent_dropped_events_total", type="exec", source="agent_buffer"
    )
    assert dropped == 1
    (gap,) = rejected_gaps(ingest.address)
    assert gap.detail.startswith("batch 2 (1 events) refused by the runtime: RESOURCE_EXHAUSTED")


class Busy(pb_grpc.RuntimeServiceServicer):
    """A runtime that is short of resources on its first ReportEvents stream, then acknowledges
    every batch it is sent."""

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self._lock = threading.Lock()
        self._streams = 0

    def ReportEvents(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self._streams += 1
            first = self._streams == 1
        for request in request_iterator:
            if first:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy; try again later")
            self.sequences.append(request.sequence)
            yield runtime_service_pb2.ReportEventsResponse(acknowledged_sequence=request.sequence)


def test_resource_exhausted_for_a_batch_within_the_limit_is_sent_again() -> None:
    busy = Busy()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_RuntimeServiceServicer_to_server(busy, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    metrics = AgentMetrics()
    outbox = Outbox(header(), batch_events=10, batch_latency=0.01, buffer_events=10_000)
    try:
        with connect(f"127.0.0.1:{port}") as channel:
            sender = Sender(outbox, channel, metrics, backoff_range=(0.01, 0.05))
            sender.start()
            sender.submit(events(10))
            assert sender.wait_idle(TIMEOUT)
            assert sender.stop(grace=5)
    finally:
        server.stop(0)
    assert busy.sequences == [1]
    assert metrics.value("parallax_agent_batches_resent_total") == 1
    assert not outbox.drops()
