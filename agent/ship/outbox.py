"""The agent's send buffer, without I/O: events go into batches of bounded size and latency,
numbered per session from 1; sealed batches stay until acknowledged; beyond the buffer bound
events are dropped, counted per type and reported with a gap record, never silently. Drop
counters and unattributed counts ride on batches as explicit records; the counters go out at
least every `counter_interval` even when nothing happened, so that the runtime knows the node
was watching (its profiles count only watched time towards their learning window). Compact
records are packed (agent.ship.records) once the runtime has acknowledged with `records_read`;
a batch of them acknowledged without it counts them as lost and turns packing off. Driven by
the sender."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import blind_spot_pb2, event_pb2, runtime_service_pb2

from agent.attributed import Attributed, Item, attributed, event_type, kind
from agent.ship import records

Request = runtime_service_pb2.ReportEventsRequest
DropKey = tuple[int, int]  # (EventType, DropSource)
MAX_BYTES = 4 * 1024 * 1024 - 64 * 1024  # the contract's 4 MiB, with room for the header
_AGENT_BUFFER = blind_spot_pb2.DROP_SOURCE_AGENT_BUFFER


@dataclass
class Batch:
    """One sealed batch, how many events it holds, and how often it was sent."""

    request: Request
    size: int = 0
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
        records: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._header, self._clock = header, clock
        self._batch_events, self._latency = batch_events, batch_latency
        self._bound, self._counter_interval = buffer_events, counter_interval
        self.records = records  # pack compact records; off for good once records were lost
        self._runtime_reads = False  # the last acknowledgement said records_read
        self._open = Attributed()
        self._since: float | None = None  # when the open batch got its first event or record
        self._unacked: dict[int, Batch] = {}
        self._next = 1
        self.buffered = 0  # events in the open batch and in unacked batches
        self._drops: dict[DropKey, int] = {}
        self._drops_changed, self._drops_sent_at = False, clock()
        self._gaps: list[blind_spot_pb2.EventGap] = []
        self._overflow: blind_spot_pb2.EventGap | None = None

    @property
    def packing(self) -> bool:
        """True while new batches carry compact records packed."""
        return self.records and self._runtime_reads

    def add(self, events: Attributed | Iterable[event_pb2.Event]) -> int:
        """Buffer events; those beyond the bound are dropped and counted. Returns how many
        were dropped."""
        batch = attributed(events)
        room = max(self._bound - self.buffered, 0)
        kept = min(len(batch), room)
        dropped = batch.items[kept:]
        if kept and not dropped and self._overflow is not None:
            _stamp(self._overflow.end_time)
            if self._overflow not in self._gaps:
                self._gaps.append(self._overflow)
            self._overflow = None
        if dropped:
            self._count_overflow(dropped)
            batch = Attributed(batch.items[:kept], batch.cgroups)
        if kept or dropped:
            self._since = self._since if self._since is not None else self._clock()
        self._open.extend(batch)
        self.buffered += kept
        return len(dropped)

    def _count_overflow(self, dropped: list[Item]) -> None:
        self._count_drops(Counter(map(kind, dropped)))
        if self._overflow is None:
            self._overflow = blind_spot_pb2.EventGap(
                reason=blind_spot_pb2.GAP_REASON_DISCONNECTED,
                detail=f"the agent's send buffer of {self._bound} events was full; events dropped",
            )
            _stamp(self._overflow.start_time)
            self._gaps.append(self._overflow)

    def _count_drops(self, lost: Mapping[int, int]) -> None:
        for event_kind, count in lost.items():
            key = (event_kind, _AGENT_BUFFER)
            self._drops[key] = self._drops.get(key, 0) + count
        self._drops_changed = True

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
        times = [self._drops_sent_at + self._counter_interval]  # counters double as heartbeats
        if self._since is not None:
            times.append(self._since + self._latency)
        return max(min(times) - self._clock(), 0.0) if times else None

    def _waiting(self) -> bool:
        """A batch of counters and gaps only waits while the newest unacked batch is one too."""
        return not self._open.items and bool(self._unacked) and not self._last().size

    def seal(self, *, flush: bool = False) -> Batch | None:
        """Seal the open batch when full, when its latency elapsed, or on `flush`; a batch of
        counters and gaps only waits while the newest unacked batch is one too, which bounds
        them."""
        now = self._clock()
        counters_due = now - self._drops_sent_at >= self._counter_interval
        self._drops_changed |= counters_due
        full = len(self._open) >= self._batch_events
        late = counters_due or (self._since is not None and now - self._since >= self._latency)
        counters = self._drops_changed or bool(self._gaps)
        if not (full or ((late or flush) and (self._open.items or counters))):
            return None
        if self._waiting():
            return None
        return self._seal(now)

    def _seal(self, now: float) -> Batch:
        items = self._open.items[: self._batch_events]
        request = self._request(items)
        while len(items) > 1 and request.ByteSize() > MAX_BYTES:  # halve past the size limit
            items = items[: len(items) // 2]
            request = self._request(items)
        self._take(len(items))
        request.sequence, self._next = self._next, self._next + 1
        request.gaps.extend(self._gaps)
        if self._drops_changed:
            for (event_kind, source), total in sorted(self._drops.items()):
                request.drop_counters.add(event_type=event_kind, source=source, dropped_total=total)
            self._drops_changed, self._drops_sent_at = False, now
        self._gaps = []
        self._since = now if self._open.items else None
        batch = self._unacked[request.sequence] = Batch(request, size=len(items))
        return batch

    def _request(self, items: list[Item]) -> Request:
        request = Request()
        request.CopyFrom(self._header)
        _stamp(request.send_time)
        if self.packing and any(isinstance(i, tuple) for i in items):
            records.pack(items, self._open.cgroups, request)
        else:
            records.messages(items, self._open.cgroups, request)
        return request

    def _take(self, count: int) -> None:
        """Drop the first `count` open events, and the attributions only they used."""
        rest = self._open.items[count:]
        used = {i[1] for i in rest if isinstance(i, tuple)}
        self._open = Attributed(rest, {c: self._open.cgroups[c] for c in used})

    def _last(self) -> Batch:
        return self._unacked[max(self._unacked)]

    def ack(self, sequence: int, records_read: bool = False) -> Batch | None:
        """Forget an acknowledged batch; None when it was not waiting (acknowledged twice).
        `records_read` is what the runtime said: packing waits for it, and a batch of records
        acknowledged without it lost them (the runtime is older than records)."""
        self._runtime_reads = records_read
        batch = self._unacked.pop(sequence, None)
        if batch is None:
            return None
        self.buffered -= batch.size
        if batch.request.HasField("records") and not records_read:
            self._lose_records(batch)
        return batch

    def _lose_records(self, batch: Batch) -> None:
        self.records = False
        lost = records.record_types(batch.request.records.data)
        self._count_drops(lost)
        self._reject_gap(
            f"batch {batch.request.sequence}: {sum(lost.values())} packed records not read by "
            "the runtime (acknowledged without records_read, an older runtime); the agent sends "
            "Event messages from now on"
        )

    def reject_oldest_sent(self, why: str) -> Batch | None:
        """Discard the oldest sent, unacknowledged batch the runtime refused as invalid: its
        events count as agent drops and a REJECTED gap says so, instead of a resend loop."""
        sent = [s for s, b in self._unacked.items() if b.sent]
        if not sent:
            return None
        batch = self._unacked.pop(min(sent))
        self.buffered -= batch.size
        lost = records.record_types(batch.request.records.data)
        lost.update(map(event_type, batch.request.events))
        self._count_drops(lost)
        if any(g.reason == blind_spot_pb2.GAP_REASON_REJECTED for g in batch.request.gaps):
            # A runtime that cannot read REJECTED gaps would refuse every batch carrying one:
            # the drop counters above still report the loss.
            return batch
        self._reject_gap(
            f"batch {batch.request.sequence} ({batch.size} events) refused by the runtime: {why}"
        )
        return batch

    def _reject_gap(self, detail: str) -> None:
        gap = blind_spot_pb2.EventGap(reason=blind_spot_pb2.GAP_REASON_REJECTED, detail=detail)
        _stamp(gap.start_time)
        _stamp(gap.end_time)
        self.add_gap(gap)

    def next_after(self, sequence: int) -> Batch | None:
        """The first unacknowledged batch numbered above `sequence`, for (re)sending in order."""
        later = [s for s in self._unacked if s > sequence]
        return self._unacked[min(later)] if later else None

    def oldest_sent(self, since: float) -> float | None:
        """When the oldest unacknowledged batch sent at or after `since` was sent."""
        return min((b.sent_at for b in self._unacked.values() if b.sent_at >= since), default=None)

    @property
    def pending(self) -> bool:
        """True while events, drop counters or gaps wait to be sealed (the periodic resending of
        unchanged drop counters aside)."""
        return self._since is not None

    @property
    def idle(self) -> bool:
        """True when nothing waits to be sealed, sent or acknowledged."""
        return not self._unacked and self._since is None


def _stamp(field: Timestamp) -> None:
    field.GetCurrentTime()
