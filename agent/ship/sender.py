"""Streams the outbox's batches to the runtime service over the `ReportEvents` bidirectional
stream: one thread reads acknowledgements while gRPC pulls batches from a generator; a stalled
or broken stream is cancelled and reopened with exponential backoff, and every unacknowledged
batch is sent again in order (the runtime deduplicates by agent, session and sequence). A batch
that can only be refused again (garbled, or past a size limit) is discarded with a REJECTED gap
instead. Each acknowledgement's `records_read` goes to the outbox, which packs records only for
a runtime that reads them. The agent's main loop calls `submit`; `agent.__main__` starts and
stops it."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from parallax.runtime.v1 import event_pb2, runtime_service_pb2, runtime_service_pb2_grpc

from agent.attributed import Attributed, attributed
from agent.metrics import AgentMetrics
from agent.ship.outbox import Batch, DropKey, Outbox
from servicekit.config import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


def _refused(code: grpc.StatusCode, head: Batch) -> bool:
    """True when a stream that ended with `code` refused `head`, the oldest batch sent, in a way
    that sending it again would repeat: the runtime found it garbled or too big for a batch
    (INVALID_ARGUMENT), or it is past the gRPC message limit that both sides enforce before any
    handler runs (RESOURCE_EXHAUSTED). A RESOURCE_EXHAUSTED for a batch within the limit is the
    peer's momentary shortage, not the batch's fault: it is sent again."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and _oversized(head)


def _oversized(batch: Batch) -> bool:
    """True when `batch` is past the gRPC message limit, which no channel will carry."""
    return batch.request.ByteSize() > MAX_MESSAGE_BYTES


def backoff(base: float, ceiling: float, attempt: int, rng: random.Random) -> float:
    """The wait before reconnect `attempt` (0-based): exponential, capped, with jitter in its
    upper half so that agents restarted together do not reconnect together."""
    delay = min(ceiling, base * 2.0**attempt)
    return rng.uniform(delay / 2, delay)


class Sender:
    """Ships one session's events; thread-safe `submit`, `set_drops` and `wait_idle`."""

    def __init__(
        self,
        outbox: Outbox,
        channel: grpc.Channel,
        metrics: AgentMetrics,
        *,
        ack_timeout: float = 10.0,
        stream_seconds: float = 300.0,
        backoff_range: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self._outbox, self._metrics = outbox, metrics
        self._stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        self._ack_timeout, self._stream_seconds = ack_timeout, stream_seconds
        self._backoff, self._rng = backoff_range, random.Random()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._call: Any = None  # the current stream, to cancel it
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)

    def submit(self, events: Attributed | Iterable[event_pb2.Event]) -> None:
        """Queue attributed events; beyond the buffer bound they are dropped and counted."""
        events = attributed(events)
        self._metrics.observe(events)
        with self._changed:
            self._outbox.add(events)
            self._update()

    def set_drops(self, totals: dict[DropKey, int]) -> None:
        """Report the kernel's cumulative drop counters."""
        with self._changed:
            self._outbox.set_drops(totals)
            self._update()

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted event is acknowledged, at most `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._outbox.idle, timeout=timeout)

    def start(self) -> None:
        """Start streaming in the background."""
        self._thread.start()

    def stop(self, grace: float) -> bool:
        """Flush and end the stream, waiting up to `grace` seconds; True when all was acked."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(grace)
        call = self._call
        if self._thread.is_alive() and call is not None:
            call.cancel()
            self._thread.join(self._ack_timeout)
        return self._outbox.idle

    def _update(self) -> None:
        self._metrics.buffer_depth.set(self._outbox.buffered)
        self._metrics.observe_drops(self._outbox.drops())
        self._changed.notify_all()

    def _run(self) -> None:
        attempt = 0
        while not (self._stopping.is_set() and self._outbox.idle):
            acked = False
            try:
                acked = self._stream()
                if self._stopping.is_set() and self._outbox.idle:
                    return
            except grpc.RpcError as exc:
                acked = self._ended(exc)
            except ValueError:  # the channel was closed under us: nothing more can be sent
                log.warning("channel closed with %d events unacknowledged", self._outbox.buffered)
                return
            attempt = 0 if acked else attempt + 1
            self._metrics.reconnects.inc()
            if self._stopping.wait(backoff(*self._backoff, attempt, self._rng)):
                return

    def _ended(self, exc: grpc.RpcError) -> bool:
        """Handle a stream that ended with `exc`: a refused head batch is discarded (its events
        counted as dropped, a REJECTED gap recording why); True when it was (the stream worked,
        the data did not: no backoff growth)."""
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        why = f"{code.name}: {exc.details() or 'no details'}"  # type: ignore[attr-defined]
        with self._changed:
            head = self._outbox.next_after(0)
            if head is None or not head.sent or not _refused(code, head):
                rejected = None
            else:
                rejected = self._outbox.reject_oldest_sent(why)
                self._update()
        if rejected is None:
            log.warning("event stream ended: %s", exc)
            return False
        log.error("runtime refused batch %d, discarded: %s", rejected.request.sequence, why)
        return True

    def _stream(self) -> bool:
        """Run one stream to its end; True when anything was acknowledged on it."""
        deadline = time.monotonic() + self._stream_seconds
        call = self._stub.ReportEvents(
            self._requests(deadline), timeout=self._stream_seconds + self._ack_timeout
        )
        self._call = call
        acked = False
        for response in call:
            with self._changed:
                packed = self._outbox.records
                batch = self._outbox.ack(response.acknowledged_sequence, response.records_read)
                self._update()
            if packed and not self._outbox.records:
                log.error(
                    "the runtime does not read packed event records (an older version): the "
                    "records of batch %d are lost and counted; sending Event messages from now on",
                    response.acknowledged_sequence,
                )
            acked = True
            if batch is not None:
                self._metrics.batches_acked.inc()
            if response.duplicate:
                self._metrics.batches_duplicate.inc()
        return acked

    def _requests(self, deadline: float) -> Iterator[runtime_service_pb2.ReportEventsRequest]:
        """Unacknowledged batches in order, then new ones as they are sealed; ends at the
        stream's deadline, when stopping with all sent, or after cancelling a stalled call."""
        sent, opened = 0, time.monotonic()
        while True:
            with self._changed:
                batch = self._next(sent, opened, deadline)
                if batch is None:
                    return
                batch.sent += 1
                batch.sent_at = time.monotonic()
                sent = batch.request.sequence
            if batch.sent > 1:
                self._metrics.batches_resent.inc()
            yield batch.request

    def _next(self, sent: int, opened: float, deadline: float) -> Batch | None:
        """The next batch to send on this stream, waiting for one to be sealed; None to end it.
        A batch past the message limit waits until all before it are acknowledged, so that it
        is the oldest one sent when the transport refuses it, and it alone is discarded."""
        while True:
            now = time.monotonic()
            oldest = self._outbox.oldest_sent(opened)
            if oldest is not None and now - oldest > self._ack_timeout:
                log.warning("no acknowledgement for %.0fs; reconnecting", now - oldest)
                if self._call is not None:
                    self._call.cancel()
                return None
            self._outbox.seal(flush=self._stopping.is_set())
            batch = self._outbox.next_after(sent)
            if batch is not None and (batch is self._outbox.next_after(0) or not _oversized(batch)):
                return batch
            if now >= deadline or (self._stopping.is_set() and not self._outbox.pending):
                return None
            waits = [deadline - now, self._ack_timeout, self._outbox.due_in() or float("inf")]
            self._changed.wait(min(waits))
