"""The compact form of packable kernel records: built from the same ring-buffer bytes as
`decode`, and turned back into exactly the Event message `decode` gives, kind by kind; other
records still decode to Event messages or cgroup changes."""

from __future__ import annotations

import socket
import struct

import pytest
from parallax.runtime.v1 import event_pb2 as pb
from parallax.type.v1 import platform_pb2

from agent.compact import PACKABLE, decode_compact, to_event
from agent.decode import DEVIATION, FLOW, HEADER, OPEN, PAIR, CgroupChange, decode

V4, V6 = socket.inet_pton(socket.AF_INET, "10.0.3.7"), socket.inet_pton(socket.AF_INET6, "fd00::7")


def record(kind: int, body: bytes, cgroup_id: int = 77) -> bytes:
    return HEADER.pack(kind, 10, 1, 1000, 123_456_789, cgroup_id, b"cart\0junk") + body


RECORDS = {
    "open": record(6, OPEN.pack(-2, 0o2101, 0o644, 0, b"/etc/shadow\0old")),
    "open-ok": record(6, OPEN.pack(3, 0, 0, 0, b"/etc/hosts")),
    "flow-v4": record(7, FLOW.pack(77, 1, 2, 6, 443, 0, V4.ljust(16, b"\0"), bytes(16))),
    "flow-v6-local": record(7, FLOW.pack(77, 2, 10, 6, 51000, 8080, V6, V6)),
    "udp": record(7, FLOW.pack(77, 3, 2, 17, 53, 40000, V4.ljust(16, b"\0"), V4.ljust(16, b"\0"))),
    "fork": record(4, PAIR.pack(4242, 0)),
    "exit-code": record(5, PAIR.pack(3 << 8, 0)),
    "exit-signal": record(5, PAIR.pack(9, 0)),
    "cap-allowed": record(9, PAIR.pack(21, 1)),
    "cap-denied": record(9, PAIR.pack(12, 0)),
    "deviation": record(2, DEVIATION.pack(165, 0)),
    "no-task": record(7, FLOW.pack(0, 2, 2, 6, 50000, 443, V4.ljust(16, b"\0"), bytes(16)), 0),
}


@pytest.mark.parametrize("raw", RECORDS.values(), ids=RECORDS.keys())
def test_compact_turns_back_into_the_decoded_event(raw: bytes) -> None:
    compact = decode_compact(raw)
    assert isinstance(compact, tuple)
    assert compact[6] in PACKABLE and compact[5] == "cart" and compact[13] == 1
    assert to_event(compact) == decode(raw)


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
    exited = decode_compact(RECORDS["exit-code"])
    assert isinstance(exited, tuple) and (exited[10], exited[11]) == (3, 0)
    cap = decode_compact(RECORDS["cap-allowed"])
    assert isinstance(cap, tuple) and (cap[7], cap[8], cap[11]) == (1, "CAP_SYS_ADMIN", 21)


def test_other_records_decode_as_before() -> None:
    mkdir = struct.pack("<256s", b"/kubepods/pod1")
    assert decode_compact(record(16, mkdir)) == CgroupChange(77, "/kubepods/pod1", True)
    assert decode_compact(record(99, b"")) is None
