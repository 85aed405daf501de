"""Test support: a reference packer written from the EventRecords contract (event.proto), so
runtime tests and benchmarks can send the same batch as Event messages and as packed records.
Kinds that do not pack stay Event messages behind a reference record."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from parallax.runtime.v1 import event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb

RECORD = struct.Struct("<QQIIIIHHIIiIIQ")


class _Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        return self.index.setdefault(text, len(self.index))


def _fields(event: event_pb2.Event, strings: _Strings) -> tuple[int, ...] | None:
    """(event_type, bits, s1, s2, value, n1, n2, count) of a packable event, else None."""
    kind = event.WhichOneof("payload")
    if kind == "file_open":
        f = event.file_open
        return (6, 0, strings(f.path), 0, f.return_value, f.flags, f.mode, f.count)
    if kind == "network_flow":
        n = event.network_flow
        bits = n.direction | n.protocol << 4 | n.family << 8
        remote, local = strings(n.remote_address), strings(n.local_address)
        return (7, bits, remote, local, n.return_value, n.remote_port, n.local_port, n.count)
    if kind == "process_fork":
        return (4, 0, 0, 0, 0, event.process_fork.child_pid, 0, 1)
    if kind == "process_exit":
        x = event.process_exit
        return (5, 0, 0, 0, x.exit_code, x.signal, 0, 1)
    if kind == "capability_use":
        c = event.capability_use
        name = strings(c.capability_name)
        return (9, int(c.allowed), name, 0, 0, c.capability_number, 0, c.count)
    if kind == "syscall_deviation":
        d = event.syscall_deviation
        return (2, d.arch, strings(d.syscall_name), 0, 0, d.syscall_number, 0, d.count)
    return None


def pack(
    events: Sequence[event_pb2.Event], unix_offset_ns: int = 0
) -> tuple[event_pb2.EventRecords, list[event_pb2.Event]]:
    """The records of `events` and the Event messages the reference records stand for. Event
    times are kept when `unix_offset_ns` makes monotonic_ns + offset equal to event_time."""
    strings, data = _Strings(), bytearray()
    cgroups: dict[int, event_pb2.Attribution] = {}
    referenced: list[event_pb2.Event] = []
    for event in events:
        fields = _fields(event, strings)
        if fields is None:
            referenced.append(event)
            data += RECORD.pack(*(0,) * 14)
            continue
        cgroups.setdefault(event.cgroup_id, event.attribution)
        comm = strings(event.comm)
        header = (event.monotonic_ns, event.cgroup_id, event.pid, event.ppid, event.uid, comm)
        data += RECORD.pack(*header, *fields)
    message = event_pb2.EventRecords(
        layout=event_pb2.RECORD_LAYOUT_V1,
        data=bytes(data),
        strings=list(strings.index),
        cgroups=[
            event_pb2.CgroupAttribution(cgroup_id=c, attribution=a) for c, a in cgroups.items()
        ],
        unix_offset_ns=unix_offset_ns,
    )
    return message, referenced


def packed(request: pb.ReportEventsRequest) -> pb.ReportEventsRequest:
    """`request` with its events as records; each event's time travels as monotonic_ns with a
    zero offset base, so times are preserved to the nanosecond."""
    timed = []
    for event in request.events:
        copy = event_pb2.Event()
        copy.CopyFrom(event)
        copy.monotonic_ns = event.event_time.ToNanoseconds() if event.HasField("event_time") else 0
        timed.append(copy)
    offset = 0 if any(not e.monotonic_ns for e in timed) else 1
    if offset:  # monotonic_ns is the Unix time already; an offset of 1 ns keeps it "known"
        for event in timed:
            event.monotonic_ns -= 1
    records, referenced = pack(timed, offset)
    out = pb.ReportEventsRequest()
    out.CopyFrom(request)
    del out.events[:]
    out.events.extend(referenced)
    out.records.CopyFrom(records)
    return out
