"""The compact form of packable kernel records: built from the ring-buffer bytes, and turned
back into exactly the Event message a reference decoder (written here from the probes' record
layouts) gives, kind by kind, as `decode_event` does; other records still decode to Event
messages or cgroup changes."""

from __future__ import annotations

import socket
import struct

import pytest
from parallax.runtime.v1 import event_pb2 as pb
from parallax.type.v1 import platform_pb2

from agent.compact import PACKABLE, decode_compact, decode_event, to_event
from agent.decode import (
    ARCH,
    BOOT_OFFSET_NS,
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
    syscall_name,
)

V4, V6 = socket.inet_pton(socket.AF_INET, "10.0.3.7"), socket.inet_pton(socket.AF_INET6, "fd00::7")
MAPPED = socket.inet_pton(socket.AF_INET6, "::ffff:10.0.3.7")  # a dual-stack socket's IPv4 peer


def record(kind: int, body: bytes, cgroup_id: int = 77) -> bytes:
    return HEADER.pack(kind, 10, 1, 1000, 123_456_789, cgroup_id, b"cart\0junk") + body


RECORDS = {
    "open": record(6, OPEN.pack(-2, 0o2101, 0o644, 0, b"/etc/shadow\0old")),
    "open-ok": record(6, OPEN.pack(3, 0, 0, 0, b"/etc/hosts")),
    "flow-v4": record(7, FLOW.pack(77, 1, 2, 6, 443, 0, V4.ljust(16, b"\0"), bytes(16), 0)),
    "flow-refused": record(7, FLOW.pack(77, 1, 2, 6, 443, 0, V4.ljust(16, b"\0"), bytes(16), -111)),
    "flow-v6-local": record(7, FLOW.pack(77, 2, 10, 6, 51000, 8080, V6, V6, 0)),
    "flow-v4-mapped": record(7, FLOW.pack(77, 2, 10, 6, 51000, 8080, MAPPED, MAPPED, 0)),
    "udp": record(
        7, FLOW.pack(77, 3, 2, 17, 53, 40000, V4.ljust(16, b"\0"), V4.ljust(16, b"\0"), 0)
    ),
    "udp-reply": record(7, FLOW.pack(77, 3, 2, 17, 40000, 5353, V4.ljust(16, b"\0"), bytes(16), 0)),
    "udp-reply-v6": record(7, FLOW.pack(77, 3, 10, 17, 40000, 5353, V6, V6, 0)),
    "fork": record(4, PAIR.pack(4242, 0)),
    "exit-code": record(5, PAIR.pack(3 << 8, 0)),
    "exit-signal": record(5, PAIR.pack(9, 0)),
    "cap-allowed": record(9, PAIR.pack(21, 1)),
    "cap-denied": record(9, PAIR.pack(12, 0)),
    "cap-startup": record(9, PAIR.pack(21, 3)),
    "cap-startup-denied": record(9, PAIR.pack(21, 2)),
    "deviation": record(2, DEVIATION.pack(165, 0)),
    "no-task": record(7, FLOW.pack(0, 2, 2, 6, 50000, 443, V4.ljust(16, b"\0"), bytes(16), 0), 0),
}


_AF, _LEN = {2: socket.AF_INET, 10: socket.AF_INET6}, {2: 4, 10: 16}


def reference(raw: bytes) -> pb.Event:
    """The Event message of a packable record, field by field from the probes' layouts."""
    kind, pid, ppid, uid, ts, cgid, comm = HEADER.unpack_from(raw)
    body = raw[HEADER.size :]
    event = pb.Event(monotonic_ns=ts, cgroup_id=cgid, pid=pid, ppid=ppid, uid=uid, comm=cstr(comm))
    event.event_time.FromNanoseconds(ts + BOOT_OFFSET_NS)
    if kind == pb.EVENT_TYPE_FILE_OPEN:
        ret, flags, mode, _, path = OPEN.unpack_from(body)
        f = event.file_open
        f.path, f.flags, f.mode, f.return_value, f.count = cstr(path), flags, mode, ret, 1
    elif kind == pb.EVENT_TYPE_NETWORK_FLOW:
        _, direction, family, proto, rport, lport, remote, local, ret = FLOW.unpack_from(body)
        n = event.network_flow
        n.direction, n.count, n.return_value = direction, 1, ret  # type: ignore[assignment]
        if remote[:12] == bytes(10) + b"\xff\xff":  # IPv4-mapped: the IPv4 peer it stands for
            family, remote, local = 2, remote[12:], local[12:]
        n.family = FAMILIES.get(family, pb.ADDRESS_FAMILY_UNSPECIFIED)
        n.protocol = PROTOCOLS.get(proto, platform_pb2.PROTOCOL_UNSPECIFIED)
        n.remote_address, n.remote_port = (
            socket.inet_ntop(_AF[family], remote[: _LEN[family]]),
            rport,
        )
        if lport:
            n.local_port = lport
            if any(local):  # a socket bound to the wildcard: its address unknown
                n.local_address = socket.inet_ntop(_AF[family], local[: _LEN[family]])
    elif kind == pb.EVENT_TYPE_PROCESS_FORK:
        event.process_fork.child_pid = PAIR.unpack_from(body)[0]
    elif kind == pb.EVENT_TYPE_PROCESS_EXIT:
        code = PAIR.unpack_from(body)[0]
        event.process_exit.exit_code, event.process_exit.signal = (code >> 8) & 0xFF, code & 0x7F
    elif kind == pb.EVENT_TYPE_CAPABILITY_USE:
        number, flags = PAIR.unpack_from(body)  # caps.c: allowed 1, made before the first exec 2
        c = event.capability_use
        c.capability_name, c.capability_number = capability_name(number), number
        c.allowed, c.runtime_startup, c.count = bool(flags & 1), bool(flags & 2), 1
    else:
        nr, _ = DEVIATION.unpack_from(body)
        d = event.syscall_deviation
        d.arch, d.syscall_number, d.syscall_name, d.count = ARCH, nr, syscall_name(nr), 1
    return event


@pytest.mark.parametrize("raw", RECORDS.values(), ids=RECORDS.keys())
def test_compact_turns_back_into_the_decoded_event(raw: bytes) -> None:
    compact = decode_compact(raw)
    assert isinstance(compact, tuple)
    assert compact[6] in PACKABLE and compact[5] == "cart" and compact[13] == 1
    assert to_event(compact) == decode_event(raw) == reference(raw)


def test_fields_follow_the_record_layout() -> None:
    flow = decode_compact(RECORDS["flow-v6-local"])
    bits = pb.FLOW_DIRECTION_ACCEPT | platform_pb2.PROTOCOL_TCP << 4 | pb.ADDRESS_FAMILY_INET6 << 8
    assert flow == (
        123_456_789,
        77,
        10,
        1,
        1000,
        "cart",
        7,
        bits,
        "fd00::7",
        "fd00::7",
        0,
        51000,
        8080,
        1,
    )
    opened = decode_compact(RECORDS["open"])
    assert opened == (
        123_456_789,
        77,
        10,
        1,
        1000,
        "cart",
        6,
        0,
        "/etc/shadow",
        "",
        -2,
        0o2101,
        0o644,
        1,
    )
    mapped = decode_compact(RECORDS["flow-v4-mapped"])
    assert isinstance(mapped, tuple)
    assert (mapped[7] >> 8, mapped[8], mapped[9]) == (
        pb.ADDRESS_FAMILY_INET,
        "10.0.3.7",
        "10.0.3.7",
    )
    refused = decode_compact(RECORDS["flow-refused"])
    assert isinstance(refused, tuple) and refused[10] == -111
    exited = decode_compact(RECORDS["exit-code"])
    assert isinstance(exited, tuple) and (exited[10], exited[11]) == (3, 0)
    cap = decode_compact(RECORDS["cap-allowed"])
    assert isinstance(cap, tuple) and (cap[7], cap[8], cap[11]) == (1, "CAP_SYS_ADMIN", 21)
    # CAPABILITY_USE bits: allowed | runtime_startup << 1
    startup = decode_compact(RECORDS["cap-startup"])
    assert isinstance(startup, tuple) and startup[7] == 0b11
    denied = decode_compact(RECORDS["cap-startup-denied"])
    assert isinstance(denied, tuple) and denied[7] == 0b10
    use = decode_event(RECORDS["cap-startup-denied"])
    assert isinstance(use, pb.Event)
    assert (use.capability_use.allowed, use.capability_use.runtime_startup) == (False, True)


def test_udp_send_carries_its_local_port() -> None:
    """n2 is a UDP send's local port; an address only when the socket is bound to one."""
    reply = decode_compact(RECORDS["udp-reply"])
    assert isinstance(reply, tuple)
    assert (reply[7] & 0xF, reply[8], reply[9], reply[11], reply[12]) == (
        pb.FLOW_DIRECTION_UDP_SEND,
        "10.0.3.7",
        "",
        40000,
        5353,
    )
    bound = decode_compact(RECORDS["udp-reply-v6"])
    assert isinstance(bound, tuple) and (bound[9], bound[12]) == ("fd00::7", 5353)


def test_other_records_decode_as_before() -> None:
    mkdir = struct.pack("<256s", b"/kubepods/pod1")
    assert decode_compact(record(16, mkdir)) == CgroupChange(77, "/kubepods/pod1", True)
    assert decode_compact(record(99, b"")) is None
