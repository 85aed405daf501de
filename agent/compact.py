"""The agent's compact form of its high-volume kernel events (file opens, flows, forks, exits,
capability checks, syscall deviations): a plain tuple laid out like a packed record of the
contract (`EventRecords`, RECORD_LAYOUT_V1) with its strings as text, built from a ring-buffer
record by one struct unpack instead of an Event message. KernelSource reads events this way;
agent.ship.records packs them, and `to_event` makes the Event message where one is needed."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from parallax.runtime.v1 import event_pb2 as pb

from agent.decode import (
    ARCH,
    BOOT_OFFSET_NS,
    CAP_ALLOWED,
    CAP_STARTUP,
    DEVIATION,
    FAMILIES,
    FLOW,
    HEADER,
    OPEN,
    PAIR,
    PROTOCOLS,
    CgroupChange,
    capability_name,
    cstr,
    decode_message,
    endpoint,
    syscall_name,
)

# monotonic_ns, cgroup_id, pid, ppid, uid, comm, event_type, bits, s1, s2, value, n1, n2, count:
# the fields of a V1 record in its order, with comm, s1 and s2 as text (event.proto says what
# bits, s1, s2, value, n1 and n2 hold per event type).
Compact = tuple[int, int, int, int, int, str, int, int, str, str, int, int, int, int]
CGROUP: Final = 1  # the position of cgroup_id in a Compact
TYPE: Final = 6  # the position of event_type
_KIND = struct.Struct("<I")
_OPEN = struct.Struct(HEADER.format + OPEN.format[1:])
_FLOW = struct.Struct(HEADER.format + FLOW.format[1:])
_PAIR = struct.Struct(HEADER.format + PAIR.format[1:])
_DEVIATION = struct.Struct(HEADER.format + DEVIATION.format[1:])
_OPENED, _FLOWED, _FORKED = (
    pb.EVENT_TYPE_FILE_OPEN,
    pb.EVENT_TYPE_NETWORK_FLOW,
    pb.EVENT_TYPE_PROCESS_FORK,
)
_EXITED, _CAP, _DEVIATED = (
    pb.EVENT_TYPE_PROCESS_EXIT,
    pb.EVENT_TYPE_CAPABILITY_USE,
    pb.EVENT_TYPE_SYSCALL_DEVIATION,
)
_ANY = bytes(16)  # the wildcard address, as a flow record's 16 address bytes
_COMMS: dict[bytes, str] = {}  # command names repeat: decode each once (bounded below)


def decode_compact(raw: bytes) -> Compact | pb.Event | CgroupChange | None:
    """One ring-buffer record: a Compact for the packable types, else as `decode_message`
    gives it."""
    build = _BUILDERS.get(_KIND.unpack_from(raw)[0])
    return build(raw) if build is not None else decode_message(raw)


def decode_event(raw: bytes) -> pb.Event | CgroupChange | None:
    """One ring-buffer record of any kind as an Event message (or a cgroup change); None for a
    type this agent does not know."""
    found = decode_compact(raw)
    return to_event(found) if isinstance(found, tuple) else found


def _comm(raw: bytes) -> str:
    text = _COMMS.get(raw)
    if text is None:
        if len(_COMMS) >= 4096:
            _COMMS.clear()
        text = _COMMS[raw] = cstr(raw)
    return text


def _open(raw: bytes) -> Compact:
    _, pid, ppid, uid, ts, cg, comm, ret, flags, mode, _, path = _OPEN.unpack_from(raw)
    return (ts, cg, pid, ppid, uid, _comm(comm), _OPENED, 0, cstr(path), "", ret, flags, mode, 1)


def _flow(raw: bytes) -> Compact:
    fields = _FLOW.unpack_from(raw)
    _, pid, ppid, uid, ts, cg, comm = fields[:7]
    direction, family, proto, rport, lport, remote, local, ret = fields[8:]
    kind, peer = endpoint(family, remote)  # IPv4-mapped peers of dual-stack sockets are IPv4
    # A UDP send's socket may be bound to no address (the wildcard): its local address unknown.
    own = endpoint(family, local)[1] if lport and local != _ANY else ""
    bits = direction | PROTOCOLS.get(proto, 0) << 4 | FAMILIES.get(kind, 0) << 8
    return (ts, cg, pid, ppid, uid, _comm(comm), _FLOWED, bits, peer, own, ret, rport, lport, 1)


def _fork(raw: bytes) -> Compact:
    _, pid, ppid, uid, ts, cg, comm, child, _ = _PAIR.unpack_from(raw)
    return (ts, cg, pid, ppid, uid, _comm(comm), _FORKED, 0, "", "", 0, child, 0, 1)


def _exit(raw: bytes) -> Compact:
    _, pid, ppid, uid, ts, cg, comm, code, _ = _PAIR.unpack_from(raw)
    status, signal = (code >> 8) & 0xFF, code & 0x7F
    return (ts, cg, pid, ppid, uid, _comm(comm), _EXITED, 0, "", "", status, signal, 0, 1)


def _cap(raw: bytes) -> Compact:
    _, pid, ppid, uid, ts, cg, comm, number, flags = _PAIR.unpack_from(raw)
    bits = flags & (CAP_ALLOWED | CAP_STARTUP)  # as the contract's allowed | runtime_startup << 1
    name = capability_name(number)
    return (ts, cg, pid, ppid, uid, _comm(comm), _CAP, bits, name, "", 0, number, 0, 1)


def _deviation(raw: bytes) -> Compact:
    _, pid, ppid, uid, ts, cg, comm, nr, _ = _DEVIATION.unpack_from(raw)
    return (ts, cg, pid, ppid, uid, _comm(comm), _DEVIATED, ARCH, syscall_name(nr), "", 0, nr, 0, 1)


_BUILDERS: dict[int, Callable[[bytes], Compact]] = {
    pb.EVENT_TYPE_FILE_OPEN: _open,
    pb.EVENT_TYPE_NETWORK_FLOW: _flow,
    pb.EVENT_TYPE_PROCESS_FORK: _fork,
    pb.EVENT_TYPE_PROCESS_EXIT: _exit,
    pb.EVENT_TYPE_CAPABILITY_USE: _cap,
    pb.EVENT_TYPE_SYSCALL_DEVIATION: _deviation,
}
PACKABLE = frozenset(_BUILDERS)  # the event types that have a compact form


def to_event(c: Compact) -> pb.Event:
    """The Event message of a Compact (attribution empty)."""
    ts, cg, pid, ppid, uid, comm, kind, bits, s1, s2, value, n1, n2, count = c
    event = pb.Event(monotonic_ns=ts, cgroup_id=cg, pid=pid, ppid=ppid, uid=uid, comm=comm)
    event.event_time.FromNanoseconds(ts + BOOT_OFFSET_NS)
    if kind == pb.EVENT_TYPE_FILE_OPEN:
        o = event.file_open
        o.path, o.flags, o.mode, o.return_value, o.count = s1, n1, n2, value, count
    elif kind == pb.EVENT_TYPE_NETWORK_FLOW:
        f = event.network_flow
        f.direction = pb.FlowDirection.ValueType(bits & 0xF)
        f.protocol = (bits >> 4) & 0xF  # type: ignore[assignment]
        f.family = pb.AddressFamily.ValueType((bits >> 8) & 0xF)
        f.remote_address, f.remote_port, f.local_address, f.local_port = s1, n1, s2, n2
        f.return_value, f.count = value, count
    elif kind == pb.EVENT_TYPE_PROCESS_FORK:
        event.process_fork.child_pid = n1
    elif kind == pb.EVENT_TYPE_PROCESS_EXIT:
        event.process_exit.exit_code, event.process_exit.signal = value, n1
    elif kind == pb.EVENT_TYPE_CAPABILITY_USE:
        u = event.capability_use
        u.capability_name, u.capability_number, u.count = s1, n1, count
        u.allowed, u.runtime_startup = bool(bits & 1), bool(bits & 2)
    elif kind == pb.EVENT_TYPE_SYSCALL_DEVIATION:
        d = event.syscall_deviation
        d.arch = bits  # type: ignore[assignment]
        d.syscall_number, d.syscall_name, d.count = n1, s1, count
    else:
        raise ValueError(f"event type {kind} has no compact form")
    return event
