"""Decoding of exec records: fd kinds from inode mode and device, the working directory, and
argv cut to the contract's limits (64 arguments of 256 bytes) so no batch is rejected."""

from __future__ import annotations

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.decode import EXEC, HEADER, decode_message, fd_kind

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
