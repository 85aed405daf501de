"""Test support for processes: read a child's output up to a marker within a deadline (no
sleeps), and check that a process id is gone."""

from __future__ import annotations

import os
import selectors
import time
from typing import IO


def read_until(stream: IO[bytes], marker: bytes, timeout: float) -> bytes:
    """Read from `stream` until `marker` appears; fail after `timeout` seconds or at EOF."""
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while marker not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                raise TimeoutError(f"{marker!r} not seen within {timeout}s; got {seen[-2000:]!r}")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise EOFError(f"stream closed before {marker!r}; got {seen[-2000:]!r}")
            seen += chunk
    return seen


def gone(pid: int) -> bool:
    """Return True when no process (not even a zombie of ours) has `pid`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait (on a pidfd, not by polling) until `pid` exits; False when `timeout` passes first.
    A zombie counts as gone: its parent, not the test, reaps it."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            return bool(selector.select(timeout)) or gone(pid)
    finally:
        os.close(fd)
