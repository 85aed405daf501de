"""A batch's events as the contract carries them: compact records packed into `EventRecords`
(RECORD_LAYOUT_V1: 64-byte records, a string table built with a dictionary, one attribution
per cgroup) with each Event message referenced by a type-0 record at its place, or, when
packing is off, all of them as Event messages; and the batch's unattributed counts either way.
Called by agent.ship.outbox when it seals a batch."""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable

from parallax.runtime.v1 import blind_spot_pb2, runtime_service_pb2
from parallax.runtime.v1 import event_pb2 as pb

from agent.attributed import Item, Resolved, event_type, fill, message
from agent.compact import CGROUP, TYPE
from agent.decode import BOOT_OFFSET_NS

Request = runtime_service_pb2.ReportEventsRequest
RECORD = struct.Struct("<QQIIIIHHIIiIIQ")
_TYPE = struct.Struct("<32xH30x")  # a record's event_type alone
Unattributed = Counter[tuple[int, int, int]]  # (EventType, cgroup id, reason) -> events


def pack(items: list[Item], cgroups: dict[int, Resolved], request: Request) -> None:
    """Put `items` into `request` as records (and the Event messages they refer to)."""
    data = bytearray(RECORD.size * len(items))  # zeros: a type-0 record needs no writing
    strings, used, events = dict[str, int](), set[int](), list[pb.Event]()
    index = strings.setdefault  # a new string gets the next index
    pack_into, offset, size = RECORD.pack_into, 0, RECORD.size
    for item in items:
        if isinstance(item, tuple):
            ts, cg, pid, ppid, uid, comm, kind, bits, s1, s2, value, n1, n2, count = item
            pack_into(
                data, offset, ts, cg, pid, ppid, uid, index(comm, len(strings)),
                kind, bits, index(s1, len(strings)), index(s2, len(strings)), value, n1, n2, count,
            )  # fmt: skip
            used.add(cg)
        else:
            events.append(item)
        offset += size
    records = request.records
    records.layout = pb.RECORD_LAYOUT_V1
    records.data = bytes(data)
    records.strings.extend(strings)
    records.unix_offset_ns = BOOT_OFFSET_NS
    for cgroup in sorted(used):
        fill(records.cgroups.add(cgroup_id=cgroup).attribution, cgroups[cgroup])
    request.events.extend(events)
    counts = _unattributed_records(items, {c: cgroups[c] for c in used}) + unattributed(events)
    request.unattributed_counts.extend(_counts(counts))


def messages(items: list[Item], cgroups: dict[int, Resolved], request: Request) -> None:
    """Put `items` into `request` as Event messages only (packing off)."""
    events = [message(item, cgroups) for item in items]
    request.events.extend(events)
    request.unattributed_counts.extend(_counts(unattributed(events)))


def record_types(data: bytes) -> Counter[int]:
    """How many packed records of each EventType `data` holds, references (type 0) left out."""
    found = Counter(kind for (kind,) in _TYPE.iter_unpack(data))
    found.pop(pb.EVENT_TYPE_UNSPECIFIED, None)
    return found


def unattributed(events: Iterable[pb.Event]) -> Unattributed:
    """Unattributed Event messages per (type, cgroup, reason)."""
    return Counter(
        (event_type(e), e.cgroup_id, e.attribution.unattributed_reason)
        for e in events
        if e.attribution.unattributed_reason
    )


def _unattributed_records(items: list[Item], cgroups: dict[int, Resolved]) -> Unattributed:
    reasons = {c: r for c, r in cgroups.items() if not isinstance(r, pb.Attribution)}
    if not reasons:
        return Counter()
    return Counter(
        (i[TYPE], i[CGROUP], reasons[i[CGROUP]])
        for i in items
        if isinstance(i, tuple) and i[CGROUP] in reasons
    )


def _counts(counts: Unattributed) -> list[blind_spot_pb2.UnattributedCount]:
    return [
        blind_spot_pb2.UnattributedCount(event_type=t, cgroup_id=c, reason=r, count=n)  # type: ignore[arg-type]
        for (t, c, r), n in sorted(counts.items())
    ]
