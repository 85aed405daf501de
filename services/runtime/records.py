"""Reading of a batch's packed EventRecords (layout RECORD_LAYOUT_V1 in event.proto) into the
steps collapser, in record order: a record equal to an earlier one of the batch but for its time
reuses that one's translation, so a repeated behaviour costs a slice and a dictionary lookup
(flows compare without their ephemeral port, which the domain does not keep). Forks and exits,
which never repeat (each names a new or an ended pid), go to the collapser as events.
References (event type 0) take the next Event message of the batch from `Events`. Any problem
rejects the whole batch with InvalidArgument naming the record."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, Protocol

from parallax.runtime.v1 import event_pb2

from services.runtime import domain
from services.runtime.domain import MAX_COUNT, MAX_PID
from services.runtime.patterns import collapse_path
from services.runtime.payloads import (
    EARLIEST,
    LATEST,
    Counted,
    Origins,
    Problem,
    attributed,
    bad,
    capability,
    deviation,
    enum,
    file_open,
    flow,
    fork,
    inbound,
    kept_ports,
)
from services.runtime.steps import Collapser, Plan, inert_open

RECORD = struct.Struct("<QQIIIIHHIIiIIQ")
_HEAD = struct.Struct("<Q24xHH16xI8x")  # a record's monotonic time, event type, bits and n2
SIZE = RECORD.size
_EARLIEST_NS, _LATEST_NS = EARLIEST * 10**9, LATEST * 10**9
_MAX_STRING = domain.MAX_PATH_BYTES
_FLOW, _OPEN = event_pb2.EVENT_TYPE_NETWORK_FLOW, event_pb2.EVENT_TYPE_FILE_OPEN
_FORK: Final = event_pb2.EVENT_TYPE_PROCESS_FORK
_EXIT: Final = event_pb2.EVENT_TYPE_PROCESS_EXIT
Known = dict[tuple[Any, ...], "Plan | Counted"]


class Events(Protocol):
    """The batch's Event messages as the records refer to them, and what they share."""

    node: str
    now: float
    origins: Origins
    known_records: Known

    def take(self) -> tuple[Plan | Counted, float]:
        """Return the next Event message's plan (or unattributed count key) and time."""


# A record's fields after the header, by event type: (bits, s1, s2, value, n1, n2, count),
# with s1 and s2 still string indices, and the batch's string table -> payload.
_Fields = tuple[int, int, int, int, int, int, int]


def _open(f: _Fields, strings: list[str]) -> domain.Payload:
    _, path, _, value, flags, _, hits = f
    return file_open(strings[path], flags, value, hits)


def _flow(f: _Fields, strings: list[str]) -> domain.Payload:
    bits, remote, local, value, remote_port, local_port, hits = f
    enum(bits >> 8, 2)  # the family and the local address, which the domain does not keep
    if local >= len(strings):
        raise IndexError(local)
    return flow(
        bits & 0xF,
        (bits >> 4) & 0xF,
        (strings[remote], remote_port),
        local_port=local_port,
        return_value=value,
        hits=hits,
    )


def _fork(f: _Fields, strings: list[str]) -> domain.Payload:
    return fork(f[4])


def _exit(f: _Fields, strings: list[str]) -> domain.Payload:
    return domain.exit_(f[3])


def _capability(f: _Fields, strings: list[str]) -> domain.Payload:
    bits, name, _, _, number, _, hits = f
    if bits > 3:
        raise Problem(f"bits must be allowed | runtime_startup << 1, got {bits}")
    return capability(strings[name], number, bool(bits & 1), hits, bool(bits & 2))


def _deviation(f: _Fields, strings: list[str]) -> domain.Payload:
    bits, name, _, _, number, _, hits = f
    return deviation(bits, number, strings[name], hits, "monitor")


PAYLOADS: dict[int, Callable[[_Fields, list[str]], domain.Payload]] = {
    event_pb2.EVENT_TYPE_FILE_OPEN: _open,
    event_pb2.EVENT_TYPE_NETWORK_FLOW: _flow,
    event_pb2.EVENT_TYPE_PROCESS_FORK: _fork,
    event_pb2.EVENT_TYPE_PROCESS_EXIT: _exit,
    event_pb2.EVENT_TYPE_CAPABILITY_USE: _capability,
    event_pb2.EVENT_TYPE_SYSCALL_DEVIATION: _deviation,
}

# The kinds whose s1 names a string (s2 is used by flows only); unused indices are ignored.
_USES_S1 = frozenset(PAYLOADS) - {
    event_pb2.EVENT_TYPE_PROCESS_FORK,
    event_pb2.EVENT_TYPE_PROCESS_EXIT,
}


def read(
    message: Any, events: Events, collapser: Collapser, unattributed: dict[Counted, int]
) -> int:
    """Feed the records of `message` (an EventRecords) to `collapser` in order, counting the
    unattributed in `unattributed`; return how many records there were."""
    if message.layout != event_pb2.RECORD_LAYOUT_V1:
        raise bad("records.layout", f"layout {message.layout} is not RECORD_LAYOUT_V1")
    data: bytes = message.data
    if len(data) % SIZE:
        raise bad("records.data", f"{len(data)} bytes is not a whole number of {SIZE}-byte records")
    strings = list(message.strings)
    if any(len(s) > _MAX_STRING for s in strings):
        raise bad("records.strings", f"a string is longer than {_MAX_STRING} bytes")
    batch = _Batch(strings, _cgroups(message.cgroups, events), events)
    offset, now = message.unix_offset_ns, events.now
    seen: dict[bytes, Plan | Counted] = {}
    unpack = RECORD.unpack_from
    start = 0
    for monotonic_ns, kind, bits, n2 in _HEAD.iter_unpack(data):
        taken: Plan | domain.Event | Counted
        if not kind:  # a reference to the next Event message
            taken, at = events.take()
        else:
            at = _time(monotonic_ns, offset, now, start)
            if kind in (_FORK, _EXIT):  # a new pid, an ended one: never repeated, no plan
                taken = batch.fresh(unpack(data, start), at, start)
            else:
                key = _key(data, start, kind, bits, n2)
                found = seen.get(key)
                if found is None:
                    found = seen[key] = batch.plan(unpack(data, start), at, start)
                taken = found
        start += SIZE
        if isinstance(taken, Plan):
            collapser.add(taken, at)  # called on the object: a native call, not a bound method's
        elif isinstance(taken, domain.Event):
            collapser.ordered(taken, at)
        else:
            unattributed[taken] = unattributed.get(taken, 0) + 1
    return len(data) // SIZE


def _key(data: bytes, start: int, kind: int, bits: int, n2: int) -> bytes:
    """A record's fields but its time; a flow's also without its ephemeral port, so that flows
    equal but for it (payloads.kept_ports) are one (n2 is a flow's local port)."""
    if kind != _FLOW:
        return data[start + 8 : start + SIZE]
    if inbound(bits & 0xF, n2):
        return data[start + 8 : start + 48] + data[start + 52 : start + SIZE]
    return data[start + 8 : start + 52] + data[start + 56 : start + SIZE]


def _time(monotonic_ns: int, offset: int, now: float, start: int) -> float:
    if not offset:
        return now
    ns = monotonic_ns + offset
    if not _EARLIEST_NS <= ns <= _LATEST_NS:
        raise bad(_where(start), f"time {ns // 10**9}s is absurd")
    return ns * 1e-9


Cgroups = dict[int, domain.Origin | int]


class _Batch:
    """What translating a batch's new records needs: its strings and cgroups, and the node's
    translations of earlier batches, keyed by a record's fields with the strings resolved and
    the attribution's identity (the same Origin object while the attribution is unchanged).
    Opens that only matter by their path's pattern (steps.inert_open) are keyed by the pattern,
    so a stream of distinct temporary or failed paths is translated once per pattern; the other
    opens (writes, token reads) are not kept at all: their paths rarely repeat across batches
    (a file per request), and keeping them would fill the table with translations never used
    again, making every lookup slower."""

    __slots__ = ("cgroups", "known", "strings")

    def __init__(self, strings: list[str], cgroups: Cgroups, events: Events) -> None:
        self.strings, self.cgroups, self.known = strings, cgroups, events.known_records

    def plan(self, fields: tuple[Any, ...], at: float, start: int) -> Plan | Counted:
        """The plan of a record new to this batch."""
        _, cgroup_id, pid, ppid, uid, comm, kind, bits, s1, s2, value, n1, n2, hits = fields
        strings, count = self.strings, len(self.strings)
        origin = self.cgroups.get(cgroup_id)
        pattern = None
        if kind == _FLOW:  # the ephemeral port is not kept (domain.Flow), so not in the key
            _, n1, n2 = kept_ports(bits & 0xF, n1, n2)
        elif kind == _OPEN and s1 < count and hits <= MAX_COUNT:
            path = strings[s1]
            if not inert_open(path, n1, value):  # a write or a token read: not kept (see above)
                return _plan(_event(fields, strings, origin, at, start))
            pattern, hits = collapse_path(path), 0  # the collapser merges it by pattern
        key = (
            id(origin) if origin.__class__ is domain.Origin else origin,
            pid,
            ppid,
            uid,
            strings[comm] if comm < count else None,
            kind,
            bits,
            pattern or (strings[s1] if s1 < count and kind in _USES_S1 else None),
            pattern is not None or (strings[s2] if s2 < count and kind == _FLOW else None),
            value,
            n1,
            n2,
            hits,
        )
        plan = self.known.get(key)
        if plan is None:
            plan = self.known[key] = _plan(_event(fields, strings, origin, at, start))
        return plan

    def fresh(self, fields: tuple[Any, ...], at: float, start: int) -> domain.Event | Counted:
        """The event of a fork or exit record."""
        return _event(fields, self.strings, self.cgroups.get(fields[1]), at, start)


def _cgroups(entries: Any, events: Events) -> Cgroups:
    """Each cgroup id's origin, or its unattributed reason."""
    found: Cgroups = {}
    for i, entry in enumerate(entries):
        cgroup_id, attribution = entry.cgroup_id, entry.attribution
        if cgroup_id in found:
            raise bad(f"records.cgroups[{i}]", f"cgroup {cgroup_id} is listed twice")
        try:
            found[cgroup_id] = attributed(attribution, events.node, cgroup_id, events.origins)
        except Problem as problem:
            raise bad(f"records.cgroups[{i}]", str(problem)) from None
    return found


def _event(
    fields: tuple[Any, ...],
    strings: list[str],
    origin: domain.Origin | int | None,
    at: float,
    start: int,
) -> domain.Event | Counted:
    _, cgroup_id, pid, ppid, uid, comm, kind, bits, s1, s2, value, n1, n2, hits = fields
    build = PAYLOADS.get(kind)
    if build is None:
        raise bad(_where(start), f"event type {kind} does not travel as a record")
    if origin is None:
        raise bad(_where(start), f"cgroup {cgroup_id} has no entry in records.cgroups")
    if pid > MAX_PID or ppid > MAX_PID:
        raise bad(_where(start), "pid or ppid is absurd")
    if isinstance(origin, int):
        return (kind, origin)
    try:
        payload = build((bits, s1, s2, value, n1, n2, hits), strings)
        name = strings[comm][:16]
    except IndexError:
        raise bad(_where(start), f"a string index is past the {len(strings)} strings") from None
    except Problem as problem:
        raise bad(_where(start), str(problem)) from None
    return domain.event(at, origin, pid, ppid, uid, name, payload)


def _plan(event: domain.Event | Counted) -> Plan | Counted:
    return Plan(event) if isinstance(event, domain.Event) else event


def _where(start: int) -> str:
    return f"records[{start // SIZE}]"
