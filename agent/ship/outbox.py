"""The agent's send buffer, without I/O: events go into batches of bounded size and latency,
numbered per session from 1; sealed batches stay until acknowledged; beyond the buffer bound
events are dropped, counted per type and reported with a gap record, never silently. Drop
counters and unattributed counts ride on batches as explicit records. Driven by the sender."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import blind_spot_pb2, event_pb2, runtime_service_pb2

Request = runtime_service_pb2.ReportEventsRequest
DropKey = tuple[int, int]  # (EventType, DropSource)
_PAYLOAD_TYPES = {
    field.name: event_pb2.EventType.Value(f"EVENT_TYPE_{field.name.upper()}")
    for field in event_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
}
_AGENT_BUFFER = blind_spot_pb2.DROP_SOURCE_AGENT_BUFFER


def event_type(event: event_pb2.Event) -> event_pb2.EventType.ValueType:
    """The EventType of an event's payload (EVENT_TYPE_UNSPECIFIED when it has none)."""
    return _PAYLOAD_TYPES.get(event.WhichOneof("payload") or "", event_pb2.EVENT_TYPE_UNSPECIFIED)


@dataclass
class Batch:
    """One sealed batch and how often it was sent."""

    request: Request
    sent: int = 0
    sent_at: float = 0.0


class Outbox:
    """Bounded batching, sequencing and acknowledgement of one agent session."""

    def __init__(
        self,
        header: Request,
        *,
        batch_events: int = 1000,
        batch_latency: float = 0.2,
        buffer_events: int = 100_000,
        counter_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._header, self._clock = header, clock
        self._batch_events, self._latency = batch_events, batch_latency
        self._bound, self._counter_interval = buffer_events, counter_interval
        self._open: list[event_pb2.Event] = []
        self._since: float | None = None  # when the open batch got its first event or record
        self._unacked: dict[int, Batch] = {}
        self._next = 1
        self.buffered = 0  # events in the open batch and in unacked batches
        self._drops: dict[DropKey, int] = {}
        self._drops_changed, self._drops_sent_at = False, clock()
        self._gaps: list[blind_spot_pb2.EventGap] = []
        self._overflow: blind_spot_pb2.EventGap | None = None

    def add(self, events: Iterable[event_pb2.Event]) -> int:
        """Buffer events; those beyond the bound are dropped and counted. Returns how many
        were dropped."""
        batch = list(events)
        room = max(self._bound - self.buffered, 0)
        kept, dropped = batch[:room], batch[room:]
        if kept and not dropped and self._overflow is not None:
            _stamp(self._overflow.end_time)
            if self._overflow not in self._gaps:
                self._gaps.append(self._overflow)
            self._overflow = None
        if dropped:
            self._count_overflow(dropped)
        if kept or dropped:
            self._since = self._since if self._since is not None else self._clock()
        self._open.extend(kept)
        self.buffered += len(kept)
        return len(dropped)

    def _count_overflow(self, dropped: list[event_pb2.Event]) -> None:
        for kind, count in Counter(map(event_type, dropped)).items():
            key = (kind, _AGENT_BUFFER)
            self._drops[key] = self._drops.get(key, 0) + count
        self._drops_changed = True
        if self._overflow is None:
            self._overflow = blind_spot_pb2.EventGap(
                reason=blind_spot_pb2.GAP_REASON_DISCONNECTED,
                detail=f"the agent's send buffer of {self._bound} events was full; events dropped",
            )
            _stamp(self._overflow.start_time)
            self._gaps.append(self._overflow)

    def set_drops(self, totals: Mapping[DropKey, int]) -> None:
        """Take cumulative drop counters from elsewhere (the kernel's per-type counters)."""
        for key, total in totals.items():
            if self._drops.get(key) != total:
                self._drops[key], self._drops_changed = total, True
                self._since = self._since if self._since is not None else self._clock()

    def add_gap(self, gap: blind_spot_pb2.EventGap) -> None:
        """Report a gap (a program detached or failed to attach) with the next batch."""
        self._gaps.append(gap)
        self._since = self._since if self._since is not None else self._clock()

    def drops(self) -> dict[DropKey, int]:
        """The cumulative drop counters of the session."""
        return dict(self._drops)

    def due_in(self) -> float | None:
        """Seconds until `seal` has work; None when only new events or an ack can make some."""
        if self._waiting():
            return None
        times = [self._drops_sent_at + self._counter_interval] if self._drops else []
        if self._since is not None:
            times.append(self._since + self._latency)
        return max(min(times) - self._clock(), 0.0) if times else None

    def _waiting(self) -> bool:
        """A batch of records only waits while the newest unacked batch is one too."""
        return not self._open and bool(self._unacked) and not self._last().request.events

    def seal(self, *, flush: bool = False) -> Batch | None:
        """Seal the open batch when full, when its latency elapsed, or on `flush`; a batch of
        records only waits while the newest unacked batch is one too, which bounds them."""
        now = self._clock()
        counters_due = bool(self._drops) and now - self._drops_sent_at >= self._counter_interval
        self._drops_changed |= counters_due
        full = len(self._open) >= self._batch_events
        late = counters_due or (self._since is not None and now - self._since >= self._latency)
        records = self._drops_changed or bool(self._gaps)
        if not (full or ((late or flush) and (self._open or records))):
            return None
        if self._waiting():
            return None
        events, self._open = self._open[: self._batch_events], self._open[self._batch_events :]
        return self._seal(events, now)

    def _seal(self, events: list[event_pb2.Event], now: float) -> Batch:
        request = Request()
        request.CopyFrom(self._header)
        request.sequence, self._next = self._next, self._next + 1
        _stamp(request.send_time)
        request.events.extend(events)
        request.unattributed_counts.extend(_unattributed(events))
        request.gaps.extend(self._gaps)
        if self._drops_changed:
            for (kind, source), total in sorted(self._drops.items()):
                request.drop_counters.add(event_type=kind, source=source, dropped_total=total)
            self._drops_changed, self._drops_sent_at = False, now
        self._gaps = []
        self._since = now if self._open else None
        batch = self._unacked[request.sequence] = Batch(request)
        return batch

    def _last(self) -> Batch:
        return self._unacked[max(self._unacked)]

    def ack(self, sequence: int) -> Batch | None:
        """Forget an acknowledged batch; None when it was not waiting (acknowledged twice)."""
        batch = self._unacked.pop(sequence, None)
        if batch is not None:
            self.buffered -= len(batch.request.events)
        return batch

    def reject_oldest_sent(self, why: str) -> Batch | None:
        """Discard the oldest sent, unacknowledged batch the runtime refused as invalid: its
        events count as agent drops and a REJECTED gap says so, instead of a resend loop."""
        sent = [s for s, b in self._unacked.items() if b.sent]
        if not sent:
            return None
        batch = self._unacked.pop(min(sent))
        self.buffered -= len(batch.request.events)
        for kind, count in Counter(map(event_type, batch.request.events)).items():
            key = (kind, _AGENT_BUFFER)
            self._drops[key] = self._drops.get(key, 0) + count
        self._drops_changed = True
        if any(g.reason == blind_spot_pb2.GAP_REASON_REJECTED for g in batch.request.gaps):
            # A runtime that cannot read REJECTED gaps would refuse every batch carrying one:
            # the drop counters above still report the loss.
            return batch
        gap = blind_spot_pb2.EventGap(
            reason=blind_spot_pb2.GAP_REASON_REJECTED,
            detail=f"batch {batch.request.sequence} ({len(batch.request.events)} events) "
            f"refused by the runtime: {why}",
        )
        _stamp(gap.start_time)
        _stamp(gap.end_time)
        self.add_gap(gap)
        return batch

    def next_after(self, sequence: int) -> Batch | None:
        """The first unacknowledged batch numbered above `sequence`, for (re)sending in order."""
        later = [s for s in self._unacked if s > sequence]
        return self._unacked[min(later)] if later else None

    def oldest_sent(self, since: float) -> float | None:
        """When the oldest unacknowledged batch sent at or after `since` was sent."""
        return min((b.sent_at for b in self._unacked.values() if b.sent_at >= since), default=None)

    @property
    def idle(self) -> bool:
        """True when nothing waits to be sealed, sent or acknowledged."""
        return not self._unacked and self._since is None


def _unattributed(events: list[event_pb2.Event]) -> list[blind_spot_pb2.UnattributedCount]:
    counts = Counter(
        (event_type(e), e.cgroup_id, e.attribution.unattributed_reason)
        for e in events
        if e.attribution.unattributed_reason
    )
    return [
        blind_spot_pb2.UnattributedCount(event_type=t, cgroup_id=c, reason=r, count=n)
        for (t, c, r), n in sorted(counts.items())
    ]


def _stamp(field: Timestamp) -> None:
    field.GetCurrentTime()
