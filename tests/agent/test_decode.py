"""Decoding of exec records: fd kinds from inode mode and device, the working directory, and
argv cut to the contract's limits (64 arguments of 256 bytes) so no batch is rejected; and of DNS
records: a message cut short keeps its whole records, and a dual-stack resolver's IPv4-mapped
address is its IPv4 address."""

from __future__ import annotations

import socket
import struct

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.decode import EXEC, HEADER, decode_message, dns_transaction, fd_kind

S_IFCHR, S_IFSOCK, S_IFIFO, S_IFREG, S_IFDIR = 0o020000, 0o140000, 0o010000, 0o100000, 0o040000


@pytest.mark.parametrize(
    ("mode", "rdev", "kind"),
    [
        (S_IFSOCK | 0o777, 0, pb.FILE_DESCRIPTOR_KIND_SOCKET),
        (S_IFIFO | 0o600, 0, pb.FILE_DESCRIPTOR_KIND_PIPE),
        (S_IFREG | 0o644, 0, pb.FILE_DESCRIPTOR_KIND_FILE),
        (S_IFCHR | 0o666, (1 << 20) | 3, pb.FILE_DESCRIPTOR_KIND_FILE),
        (S_IFCHR | 0o620, (136 << 20) | 2, pb.FILE_DESCRIPTOR_KIND_TTY),
        (S_IFCHR | 0o666, 5 << 20, pb.FILE_DESCRIPTOR_KIND_TTY),
        (S_IFDIR | 0o755, 0, pb.FILE_DESCRIPTOR_KIND_UNSPECIFIED),
        (0, 0, pb.FILE_DESCRIPTOR_KIND_UNSPECIFIED),
    ],
    ids=["socket", "pipe", "file", "dev-null", "pts", "dev-tty", "directory", "closed"],
)
def test_fd_kind(mode: int, rdev: int, kind: int) -> None:
    assert fd_kind(mode, rdev) == kind


def _exec_record(args: bytes, cwd: list[bytes], depth: int) -> bytes:
    header = HEADER.pack(3, 10, 1, 0, 5, 77, b"sh")
    names = b"".join(name.ljust(64, b"\0") for name in cwd)
    body = EXEC.pack(
        0, 0, 0, len(args), 0, 0, S_IFSOCK, S_IFIFO, S_IFREG, depth, 0, 0, 0, 0,
        b"/bin/sh", args, names,
    )  # fmt: skip
    return header + body


def test_exec_argv_limits_and_cwd() -> None:
    args = b"\0".join([b"sh", b"-c", b"x" * 300] + [b"a"] * 70) + b"\0"
    event = decode_message(_exec_record(args, [b"work", b"srv"], 2))
    assert isinstance(event, pb.Event)
    argv = list(event.exec.argv)
    assert len(argv) == 64 and argv[2] == "x" * 256 and event.exec.argv_truncated
    assert event.exec.cwd == "/srv/work"
    assert (event.exec.stdin_kind, event.exec.stdout_kind, event.exec.stderr_kind) == (
        pb.FILE_DESCRIPTOR_KIND_SOCKET,
        pb.FILE_DESCRIPTOR_KIND_PIPE,
        pb.FILE_DESCRIPTOR_KIND_FILE,
    )


def test_exec_unknown_cwd_stays_empty() -> None:
    event = decode_message(_exec_record(b"sh\0", [], 0xFFFF))
    assert isinstance(event, pb.Event) and event.exec.cwd == "" and event.exec.argv == ["sh"]


# dns.c struct dns_event after the header: egress, family, server port, length, server; then
# the message's copied bytes.
DNS_HEAD = struct.Struct("<BBHI16s")
RESOLVER = socket.inet_pton(socket.AF_INET6, "::ffff:10.96.0.10")  # a dual-stack resolver socket


def _dns_answer(addresses: int, txid: int = 0x1234) -> bytes:
    header = struct.pack("!HHHHHH", txid, 0x8180, 1, addresses, 0, 0)
    question = b"\x04many\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    answers = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, i])
        for i in range(addresses)
    )
    return header + question + answers


def _dns_record(message: bytes, egress: int = 0) -> bytes:
    head = DNS_HEAD.pack(egress, 10, 53, len(message), RESOLVER)
    return HEADER.pack(8, 0, 0, 0, 5, 77, b"") + head + message


def _dns(record: bytes) -> pb.DnsQuery:
    event = decode_message(record)
    assert isinstance(event, pb.Event)
    return event.dns_query


def test_dns_answer_whole() -> None:
    query = _dns(_dns_record(_dns_answer(3)))
    assert (query.query_name, query.query_type, query.rcode) == ("many.example.com", "A", 0)
    assert list(query.answer_addresses) == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert (query.server_address, query.server_port) == ("10.96.0.10", 53)


@pytest.mark.parametrize("cut", [1, 2, 3, 14], ids=["in-address", "in-address-2", "rdata", "rr"])
def test_dns_answer_cut_keeps_the_whole_records(cut: int) -> None:
    """A message cut inside its third record (as the kernel copies a message longer than its
    limit) keeps the two records before it, never an address built from part of one."""
    query = _dns(_dns_record(_dns_answer(3)[:-cut]))
    assert query.rcode == 0
    assert list(query.answer_addresses) == ["10.0.0.0", "10.0.0.1"]


def test_dns_answer_with_wrong_lengths_keeps_what_reads() -> None:
    message = bytearray(_dns_answer(2))
    message[-6:-4] = struct.pack("!H", 9)  # the last record claims 9 bytes of rdata: there are 4
    query = _dns(_dns_record(bytes(message)))
    assert list(query.answer_addresses) == ["10.0.0.0"]
    assert _dns(_dns_record(b"\x12\x34\x81")).rcode == -1  # shorter than a header


def test_dns_transaction() -> None:
    assert dns_transaction(_dns_record(_dns_answer(1, txid=0xBEEF))) == (0xBEEF, True)
    assert dns_transaction(_dns_record(_dns_answer(1, txid=7), egress=1)) == (7, False)
