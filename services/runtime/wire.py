"""Parsing of ReportEventsRequest into a validated domain Batch, in one pass: any garbled,
oversized or absurd part rejects the whole batch with InvalidArgument naming the field, before
anything is applied. Events equal but for their times are validated and translated once (their
encodings are compared with the time fields cut off) and fed to the steps collapser in batch
order. Unattributed events are counted for their node, not profiled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb

from servicekit.errors import InvalidArgument
from services.runtime import domain, records
from services.runtime.domain import MAX_PID
from services.runtime.payloads import (
    EARLIEST,
    EVENT_TYPES,
    LATEST,
    PAYLOADS,
    Counted,
    Origins,
    Problem,
    attributed,
    bad,
    count,
    enum,
    timestamp,
)
from services.runtime.steps import Collapser, Plan

_MONOTONIC_TAG, _TIME_TAG = b"\x08", b"\x12"  # Event fields 1 (varint) and 2 (length-delimited)
Counts = dict[Counted, int]


def _counters(request: pb.ReportEventsRequest, unattributed: Counts) -> Counts:
    """Return the drop counters; merge the declared unattributed counts into `unattributed`
    (counted from the batch's events). Agents declare the unattributed events they send, so
    each (type, reason) counts the larger of the two, never their sum."""
    drops: Counts = {}
    for i, d in enumerate(request.drop_counters):
        with _at(f"drop_counters[{i}]"):
            key = (enum(d.event_type, 10), enum(d.source, 4))
            drops[key] = max(drops.get(key, 0), count(d.dropped_total))
    declared: Counts = {}
    for i, u in enumerate(request.unattributed_counts):
        with _at(f"unattributed_counts[{i}]"):
            key = (enum(u.event_type, 10), enum(u.reason, 4))
            declared[key] = declared.get(key, 0) + count(u.count)
    for key, total in declared.items():
        unattributed[key] = max(unattributed.get(key, 0), total)
    return drops


def _gap(gap: Any) -> domain.Gap:
    return domain.Gap(
        enum(gap.event_type, 10),
        enum(gap.reason, max(blind_spot_pb2.GapReason.values())),
        timestamp(gap.start_time.seconds, gap.start_time.nanos),
        timestamp(gap.end_time.seconds, gap.end_time.nanos) if gap.HasField("end_time") else None,
        gap.detail[:1024],
    )


def _report(request: pb.ReportEventsRequest, unattributed: Counts) -> domain.NodeReport:
    drops = _counters(request, unattributed)
    gaps = []
    for i, g in enumerate(request.gaps):
        with _at(f"gaps[{i}]"):
            gaps.append(_gap(g))
    with _at("arch"):
        arch = enum(request.arch, 8)
    return domain.NodeReport(
        request.node_name,
        request.agent_id,
        request.agent_version[:64],
        request.kernel_release[:128],
        arch,
        request.session_id,
        drops,
        unattributed,
        tuple(gaps),
    )


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Name `where` in the InvalidArgument that a Problem inside becomes."""
    try:
        yield
    except Problem as problem:
        raise bad(where, str(problem)) from None


def _check_header(request: pb.ReportEventsRequest) -> None:
    for field in ("agent_id", "node_name", "session_id"):
        value = getattr(request, field)
        if not value or len(value) > domain.MAX_NAME:
            raise bad(field, f"{field} is required (at most {domain.MAX_NAME} bytes)")
    if request.sequence < 1:
        raise bad("sequence", "sequence numbers start at 1")
    total = len(request.events) + len(request.records.data) // records.SIZE
    if total > domain.MAX_BATCH_EVENTS:
        raise bad("events", f"{total} events; the limit is {domain.MAX_BATCH_EVENTS}")


def _plan(event: Any, index: int, at: float, node: str, origins: Origins) -> Plan | Counted:
    kind = event.WhichOneof("payload")
    if kind is None:
        raise bad(f"events[{index}]", "no payload, or a payload type this service does not know")
    with _at(f"events[{index}]"):
        origin = attributed(event.attribution, node, event.cgroup_id, origins)
    if isinstance(origin, int):
        return (EVENT_TYPES[kind], origin)
    pid, ppid = event.pid, event.ppid
    if pid > MAX_PID or ppid > MAX_PID:
        raise bad(f"events[{index}]", "pid or ppid is absurd")
    try:
        payload = PAYLOADS[kind](getattr(event, kind))
    except Problem as problem:
        raise bad(f"events[{index}].{kind}", str(problem)) from None
    return Plan(domain.Event(at, origin, pid, ppid, event.uid, event.comm[:16], payload))


def _header_size(request: pb.ReportEventsRequest) -> int:
    """Return the encoded size of every field of `request` but its events."""
    header = pb.ReportEventsRequest(
        agent_id=request.agent_id,
        node_name=request.node_name,
        boot_id=request.boot_id,
        session_id=request.session_id,
        sequence=request.sequence,
        agent_version=request.agent_version,
        kernel_release=request.kernel_release,
        arch=request.arch,
        drop_counters=request.drop_counters,
        unattributed_counts=request.unattributed_counts,
        gaps=request.gaps,
    )
    if request.HasField("send_time"):
        header.send_time.CopyFrom(request.send_time)
    records = request.records.ByteSize()  # measured in place: copying it would cost per record
    return header.ByteSize() + (records + 1 + _varint_size(records) if records else 0)


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


class Plans:
    """Translated events by node, kept across batches: agents report the same behaviour batch
    after batch, so most events are validated only once. Event messages are keyed by their
    encoding with the times cut off, records by their fields with the strings resolved; both
    share the node's origins. Bounded: all is dropped when it holds `limit` events. Safe to
    share between threads."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.nodes: dict[str, tuple[dict[bytes, Plan | Counted], Origins, records.Known]] = {}

    def of(
        self, node: str, expected: int
    ) -> tuple[dict[bytes, Plan | Counted], Origins, records.Known]:
        """Return the plans and origins of `node`, making room for `expected` more plans."""
        size = sum(len(plans) + len(known) for plans, _, known in self.nodes.values())
        if size + expected > self.limit:
            self.nodes = {}
        return self.nodes.setdefault(node, ({}, {}, {}))


def batch(request: pb.ReportEventsRequest, now: float, plans: Plans | None = None) -> domain.Batch:
    """Validate and translate one batch (unset event times become `now`); raise
    InvalidArgument on the first problem, an oversized batch before anything else. Pass the
    same `plans` to every call to reuse translations of events seen in earlier batches."""
    _check_header(request)
    total = len(request.events) + len(request.records.data) // records.SIZE
    known, origins, known_records = (plans or Plans()).of(request.node_name, total)
    try:
        return _batch(request, _Events(request, now, known, origins, known_records))
    except InvalidArgument:
        _check_size(request.ByteSize())  # the error path may afford the exact size
        raise


def _check_size(size: int) -> None:
    if size > domain.MAX_BATCH_BYTES:
        raise bad("batch", f"{size} bytes encoded; the limit is {domain.MAX_BATCH_BYTES}")


class _Events:
    """The Event messages of one batch, translated one by one in order."""

    def __init__(
        self,
        request: pb.ReportEventsRequest,
        now: float,
        plans: dict[bytes, Plan | Counted],
        origins: Origins,
        known_records: records.Known,
    ) -> None:
        self.node, self.now, self.plans, self.origins = request.node_name, now, plans, origins
        self.known_records = known_records
        self.events = request.events
        self.index = 0
        self.size = 0  # encoded bytes of the events taken so far

    def __len__(self) -> int:
        return len(self.events)

    def take(self) -> tuple[Plan | Counted, float]:
        """Return the next event's plan (or unattributed count key) and time."""
        index = self.index
        if index >= len(self.events):
            raise bad("records", "more references to events than events")
        self.index += 1
        event = self.events[index]
        monotonic = event.monotonic_ns
        stamp = event.event_time
        seconds, nanos = stamp.seconds, stamp.nanos
        if seconds or nanos:
            if not EARLIEST <= seconds <= LATEST:
                raise bad(f"events[{index}].event_time", f"time {seconds}s is absurd")
            at = seconds + nanos * 1e-9
        else:
            at = self.now
        raw = event.SerializeToString()
        length = len(raw)
        self.size += length + 2 + (length > 127) + (length > 16383) + (length > 2097151)
        cut = 1 + (monotonic.bit_length() + 6) // 7 if raw.startswith(_MONOTONIC_TAG) else 0
        if raw.startswith(_TIME_TAG, cut):
            cut += 2 + raw[cut + 1]
        key = raw[cut:] if cut else raw
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = _plan(event, index, at, self.node, self.origins)
        return plan, at


def _batch(request: pb.ReportEventsRequest, events: _Events) -> domain.Batch:
    unattributed: Counts = {}
    collapser = Collapser()
    if request.records.data:
        total = records.read(request.records, events, collapser, unattributed)
        if events.index != len(events):
            raise bad("records", f"{len(events) - events.index} events without a reference")
    else:
        total = len(events)
        for _ in range(total):
            plan, at = events.take()
            if isinstance(plan, Plan):
                collapser.add(plan, at)
            else:
                unattributed[plan] = unattributed.get(plan, 0) + 1
    _check_size(_header_size(request) + events.size)
    batch_key = domain.BatchKey(
        request.agent_id, request.boot_id, request.session_id, request.sequence
    )
    report = _report(request, unattributed)
    return domain.Batch(batch_key, report, tuple(collapser.steps), total)
