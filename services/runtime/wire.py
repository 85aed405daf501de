"""Parsing of ReportEventsRequest into a validated domain Batch, in one pass: any garbled,
oversized or absurd part rejects the whole batch with InvalidArgument naming the field, before
anything is applied. Unattributed events are counted for their node, not profiled."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from ipaddress import ip_address
from typing import Any

from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb

from servicekit.errors import InvalidArgument
from services.runtime import domain
from services.runtime.domain import MAX_ARG_BYTES, MAX_ARGS, MAX_COUNT, MAX_PATH_BYTES, MAX_PID

_SOCKET, _TTY = 3, 4
_EVENT_TYPES = {
    "syscall_set": 1,
    "syscall_deviation": 2,
    "exec": 3,
    "process_fork": 4,
    "process_exit": 5,
    "file_open": 6,
    "network_flow": 7,
    "dns_query": 8,
    "capability_use": 9,
    "seccomp_audit": 10,
}
_EARLIEST, _LATEST = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01


def _bad(where: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"batch rejected, nothing stored: {where}: {problem}")


def _enum(value: int, high: int, where: str) -> int:
    if not 0 <= value <= high:
        raise _bad(where, f"unknown enum value {value}")
    return value


def _count(value: int, where: str) -> int:
    if value > MAX_COUNT:
        raise _bad(where, f"count {value} is absurd")
    return value or 1


def _path(value: str, where: str) -> str:
    if not value or len(value) > MAX_PATH_BYTES:
        raise _bad(where, f"path must be 1-{MAX_PATH_BYTES} bytes")
    return value


@lru_cache(maxsize=65_536)
def _address(value: str) -> bool:
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


def timestamp(seconds: int, nanos: int, where: str) -> float:
    """Return epoch seconds; 0 for an unset time; reject times before 2000 or after 2100."""
    if seconds == 0 and nanos == 0:
        return 0.0
    if not _EARLIEST <= seconds <= _LATEST:
        raise _bad(where, f"time {seconds}s is absurd")
    return seconds + nanos * 1e-9


def _exec(m: Any, where: str) -> domain.Exec:
    if len(m.argv) > MAX_ARGS or any(len(a) > MAX_ARG_BYTES for a in m.argv):
        raise _bad(where, f"argv must have at most {MAX_ARGS} arguments of {MAX_ARG_BYTES} bytes")
    return domain.Exec(
        _path(m.path, where),
        tuple(m.argv),
        m.euid,
        m.return_value,
        m.stdin_kind == _SOCKET,
        m.stdout_kind == _SOCKET,
        m.stdin_kind == _TTY,
    )


def _fork(m: Any, where: str) -> domain.Fork:
    if not 0 < m.child_pid <= MAX_PID:
        raise _bad(where, f"child_pid {m.child_pid} is absurd")
    return domain.Fork(m.child_pid)


def _open(m: Any, where: str) -> domain.FileOpen:
    return domain.FileOpen(_path(m.path, where), m.flags, m.return_value, _count(m.count, where))


def _flow(m: Any, where: str) -> domain.Flow:
    if m.remote_port > 65535 or m.local_port > 65535:
        raise _bad(where, "ports must be at most 65535")
    if not _address(m.remote_address):
        raise _bad(where, f"remote_address {m.remote_address[:64]!r} is not an IP address")
    return domain.Flow(
        _enum(m.direction, 3, where),
        _enum(m.protocol, 3, where),
        m.remote_address,
        m.remote_port,
        m.local_port,
        m.return_value,
        _count(m.count, where),
    )


def _dns(m: Any, where: str) -> domain.Dns:
    name = m.query_name.lower().rstrip(".")
    if not name or len(name) > domain.MAX_NAME or len(m.answer_addresses) > 32:
        raise _bad(where, "query_name must be 1-253 bytes with at most 32 answer addresses")
    if not all(_address(a) for a in m.answer_addresses):
        raise _bad(where, "answer_addresses must be IP addresses")
    return domain.Dns(name, tuple(m.answer_addresses))


def _capability(m: Any, where: str) -> domain.Capability:
    if m.capability_number > 63 or not m.capability_name:
        raise _bad(where, "capability must have a name and a number up to 63")
    return domain.Capability(
        m.capability_name, m.capability_number, m.allowed, _count(m.count, where)
    )


def _syscall_set(m: Any, where: str) -> domain.SyscallSet:
    numbers = tuple(m.syscall_numbers)
    names = tuple(m.syscall_names) or ("",) * len(numbers)
    if len(numbers) > 1024 or len(names) != len(numbers):
        raise _bad(where, "at most 1024 syscall numbers, one name per number")
    if numbers and (
        numbers[-1] > domain.MAX_SYSCALL_NUMBER or list(numbers) != sorted(set(numbers))
    ):
        raise _bad(where, "syscall numbers must be ascending, unique and at most 1023")
    arch = _enum(m.arch, 8, where)
    return domain.SyscallSet(
        arch, numbers, names, m.start_observed, frozenset(m.runtime_startup_syscall_numbers)
    )


def _deviation(m: Any, where: str, source: str) -> domain.Deviation:
    if m.syscall_number > domain.MAX_SYSCALL_NUMBER:
        raise _bad(where, f"syscall number {m.syscall_number} is absurd")
    return domain.Deviation(
        _enum(m.arch, 8, where), m.syscall_number, m.syscall_name, _count(m.count, where), source
    )


def _exit(m: Any, where: str) -> domain.Exit:
    return domain.Exit(m.exit_code)


def _monitor(m: Any, where: str) -> domain.Deviation:
    return _deviation(m, where, "monitor")


def _audit(m: Any, where: str) -> domain.Deviation:
    return _deviation(m, where, "seccomp_audit")


_PAYLOADS: dict[str, Callable[[Any, str], domain.Payload]] = {
    "exec": _exec,
    "process_fork": _fork,
    "file_open": _open,
    "network_flow": _flow,
    "dns_query": _dns,
    "capability_use": _capability,
    "syscall_set": _syscall_set,
    "process_exit": _exit,
    "syscall_deviation": _monitor,
    "seccomp_audit": _audit,
}


def _origin(attribution: Any, node: str, cgroup_id: int, where: str) -> domain.Origin:
    ref = attribution.workload
    fields = (ref.namespace, ref.kind, ref.name, ref.container, attribution.pod_uid)
    if not all(fields) or any(len(f) > domain.MAX_NAME for f in fields):
        raise _bad(where, "attribution needs namespace, kind, name, container and pod_uid")
    if len(attribution.image) > MAX_PATH_BYTES or len(attribution.image_digest) > 256:
        raise _bad(where, "image or image_digest is too long")
    return domain.Origin(
        domain.Workload(ref.namespace, ref.kind, ref.name),
        ref.pod,
        ref.container,
        attribution.pod_uid,
        attribution.container_id,
        attribution.image,
        attribution.image_digest,
        node,
        cgroup_id,
    )


def _report(
    request: pb.ReportEventsRequest, unattributed: dict[tuple[int, int], int]
) -> domain.NodeReport:
    drops: dict[tuple[int, int], int] = {}
    for i, d in enumerate(request.drop_counters):
        key = (
            _enum(d.event_type, 10, f"drop_counters[{i}]"),
            _enum(d.source, 3, f"drop_counters[{i}]"),
        )
        drops[key] = max(drops.get(key, 0), _count(d.dropped_total, f"drop_counters[{i}]"))
    for i, u in enumerate(request.unattributed_counts):
        where = f"unattributed_counts[{i}]"
        key = (_enum(u.event_type, 10, where), _enum(u.reason, 4, where))
        unattributed[key] = unattributed.get(key, 0) + _count(u.count, where)
    gaps = tuple(
        domain.Gap(
            _enum(g.event_type, 10, f"gaps[{i}]"),
            _enum(g.reason, max(blind_spot_pb2.GapReason.values()), f"gaps[{i}]"),
            timestamp(g.start_time.seconds, g.start_time.nanos, f"gaps[{i}].start_time"),
            timestamp(g.end_time.seconds, g.end_time.nanos, f"gaps[{i}].end_time")
            if g.HasField("end_time")
            else None,
            g.detail[:1024],
        )
        for i, g in enumerate(request.gaps)
    )
    return domain.NodeReport(
        request.node_name,
        request.agent_id,
        request.agent_version[:64],
        request.kernel_release[:128],
        _enum(request.arch, 8, "arch"),
        request.session_id,
        drops,
        unattributed,
        gaps,
    )


def _check_header(request: pb.ReportEventsRequest) -> None:
    for field in ("agent_id", "node_name", "session_id"):
        value = getattr(request, field)
        if not value or len(value) > domain.MAX_NAME:
            raise _bad(field, f"{field} is required (at most {domain.MAX_NAME} bytes)")
    if request.sequence < 1:
        raise _bad("sequence", "sequence numbers start at 1")
    if len(request.events) > domain.MAX_BATCH_EVENTS:
        raise _bad(
            "events", f"{len(request.events)} events; the limit is {domain.MAX_BATCH_EVENTS}"
        )
    size = request.ByteSize()
    if size > domain.MAX_BATCH_BYTES:
        raise _bad("batch", f"{size} bytes encoded; the limit is {domain.MAX_BATCH_BYTES}")


def batch(request: pb.ReportEventsRequest, now: float) -> domain.Batch:
    """Validate and translate one batch (unset event times become `now`); raise
    InvalidArgument on the first problem."""
    _check_header(request)
    node = request.node_name
    origins: dict[tuple[str, str, str, str, int], domain.Origin] = {}
    unattributed: dict[tuple[int, int], int] = {}
    events: list[domain.Event] = []
    for index, event in enumerate(request.events):
        kind = event.WhichOneof("payload")
        if kind is None:
            raise _bad(
                f"events[{index}]", "no payload, or a payload type this service does not know"
            )
        attribution = event.attribution
        if not attribution.pod_uid:
            reason = _enum(attribution.unattributed_reason, 4, f"events[{index}]")
            if not reason:
                raise _bad(f"events[{index}]", "neither attributed nor an unattributed_reason")
            counted = (_EVENT_TYPES[kind], reason)
            unattributed[counted] = unattributed.get(counted, 0) + 1
            continue
        cache_key = (
            attribution.pod_uid,
            attribution.container_id,
            attribution.image_digest,
            attribution.workload.container,
            event.cgroup_id,
        )
        origin = origins.get(cache_key)
        if origin is None:
            origin = origins[cache_key] = _origin(
                attribution, node, event.cgroup_id, f"events[{index}]"
            )
        if event.pid > MAX_PID or event.ppid > MAX_PID:
            raise _bad(f"events[{index}]", "pid or ppid is absurd")
        stamp = event.event_time
        at = timestamp(stamp.seconds, stamp.nanos, f"events[{index}].event_time") or now
        payload = _PAYLOADS[kind](getattr(event, kind), f"events[{index}].{kind}")
        events.append(
            domain.Event(at, origin, event.pid, event.ppid, event.uid, event.comm[:16], payload)
        )
    key = domain.BatchKey(request.agent_id, request.boot_id, request.session_id, request.sequence)
    return domain.Batch(key, _report(request, unattributed), tuple(events))
