"""Parsing of ReportEventsRequest into a validated domain Batch, in one pass: any garbled,
oversized or absurd part rejects the whole batch with InvalidArgument naming the field, before
anything is applied. Events equal but for their times are validated and translated once (their
encodings, read in place in the request's bytes, are compared with the time fields cut off) and
fed to the steps collapser in batch order. Unattributed events are counted for their node, not
profiled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb

from services.runtime import domain, encoded, records
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

Counts = dict[Counted, int]
# A node's translated Event messages (by encoding, times cut off), origins, translated records.
NodePlans = tuple[dict[bytes, Plan | Counted], Origins, records.Known]


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


def _check_header(request: pb.ReportEventsRequest) -> int:
    """Check the batch's identity and size in events; return that size."""
    for field in ("agent_id", "node_name", "session_id"):
        value = getattr(request, field)
        if not value or len(value) > domain.MAX_NAME:
            raise bad(field, f"{field} is required (at most {domain.MAX_NAME} bytes)")
    if request.sequence < 1:
        raise bad("sequence", "sequence numbers start at 1")
    total = _event_count(request)
    if total > domain.MAX_BATCH_EVENTS:
        raise bad("events", f"{total} events; the limit is {domain.MAX_BATCH_EVENTS}")
    return total


def _event_count(request: pb.ReportEventsRequest) -> int:
    """How many events `request` holds: its records when it has any (an Event message then
    travels with the record that refers to it, and one without a reference is refused later),
    else its Event messages."""
    packed = len(request.records.data) // records.SIZE
    return max(packed, len(request.events)) if packed else len(request.events)


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
    return Plan(domain.event(at, origin, pid, ppid, event.uid, event.comm[:16], payload))


class Plans:
    """Translated events by node, kept across batches: agents report the same behaviour batch
    after batch, so most events are validated only once. Event messages are keyed by their
    encoding with the times cut off, records by their fields with the strings resolved; both
    share the node's origins. Bounded: all is dropped when it holds `limit` events. Safe to
    share between threads."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.nodes: dict[str, NodePlans] = {}

    def of(self, node: str, expected: int) -> NodePlans:
        """Return the plans and origins of `node`, making room for `expected` more plans."""
        size = sum(len(plans) + len(known) for plans, _, known in self.nodes.values())
        if size + expected > self.limit:
            self.nodes = {}
        return self.nodes.setdefault(node, ({}, {}, {}))


def batch(
    request: pb.ReportEventsRequest,
    now: float,
    plans: Plans | None = None,
    raw: bytes | None = None,
) -> domain.Batch:
    """Validate and translate one batch (unset event times become `now`); raise
    InvalidArgument on the first problem, an oversized batch before anything else. Pass the
    same `plans` to every call to reuse translations of events seen in earlier batches, and
    `raw`, the request's encoding as it came, when there is one (else it is encoded here)."""
    if raw is None:
        raw = request.SerializeToString()
    if len(raw) > domain.MAX_BATCH_BYTES:
        raise bad("batch", f"{len(raw)} bytes encoded; the limit is {domain.MAX_BATCH_BYTES}")
    total = _check_header(request)
    node = (plans or Plans()).of(request.node_name, total)
    return _batch(request, _Events(request, raw, now, node))


class _Events:
    """The Event messages of one batch, translated one by one in order. Each is keyed by its
    encoding in `raw` with the times cut off (encoded.head), so a repeat builds no message
    object; the decoded message is read for new ones, and for times laid out unusually."""

    def __init__(
        self,
        request: pb.ReportEventsRequest,
        raw: bytes,
        now: float,
        node: NodePlans,
    ) -> None:
        self.node, self.now = request.node_name, now
        self.plans, self.origins, self.known_records = node
        self.events, self.raw = request.events, raw
        spans = encoded.spans(raw)
        if spans is None or len(spans) != 2 * len(request.events):  # a group, an odd encoder
            self.raw, spans = _joined(request.events)
        self.spans = spans
        self.index = 0

    def __len__(self) -> int:
        return len(self.events)

    def take(self) -> tuple[Plan | Counted, float]:
        """Return the next event's plan (or unattributed count key) and time."""
        index = self.index
        if index >= len(self.events):
            raise bad("records", "more references to events than events")
        self.index += 1
        raw, end = self.raw, self.spans[2 * index + 1]
        cut, seconds, nanos = encoded.head(raw, self.spans[2 * index], end)
        if cut < 0:
            stamp = self.events[index].event_time
            seconds, nanos = stamp.seconds, stamp.nanos
        if seconds or nanos:
            if not EARLIEST <= seconds <= LATEST:
                raise bad(f"events[{index}].event_time", f"time {seconds}s is absurd")
            at = seconds + nanos * 1e-9
        else:
            at = self.now
        key = raw[cut:end] if cut >= 0 else self.events[index].SerializeToString()
        plan = self.plans.get(key)
        if plan is None:
            plan = _plan(self.events[index], index, at, self.node, self.origins)
            self.plans[key] = plan
        return plan, at


def _joined(events: Any) -> tuple[bytes, list[int]]:
    """Return `events` encoded one after another, and the spans of each in that."""
    parts = [event.SerializeToString() for event in events]
    spans: list[int] = []
    at = 0
    for part in parts:
        spans += (at, at + len(part))
        at += len(part)
    return b"".join(parts), spans


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
    batch_key = domain.BatchKey(
        request.agent_id, request.boot_id, request.session_id, request.sequence
    )
    report = _report(request, unattributed)
    return domain.Batch(batch_key, report, tuple(collapser.steps), total)
