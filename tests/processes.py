"""Test support for processes: start a service module on port 0 and learn its address, read a
child's output up to a marker within a deadline (no sleeps), poll a condition within a deadline,
and check that a process id is gone."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


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


@contextmanager
def service_process(
    module: str, data: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m <module>` on 127.0.0.1:0, plaintext, SQLite under `data` (stderr to
    `data/<name>.log`); yields the process and the address it announced, kills it at the end."""
    environment = {
        **os.environ,
        "PARALLAX_LISTEN": "127.0.0.1:0",
        "PARALLAX_DATA": str(data),
        "PARALLAX_INSECURE": "true",
        **env,
    }
    for name in ("DATABASE_URL", "PARALLAX_TLS_DIR"):
        environment.pop(name, None)
    with (data / f"{module.rsplit('.', 1)[-1]}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=environment, stdout=subprocess.PIPE, stderr=log
        )
    try:
        assert process.stdout is not None
        line = read_until(process.stdout, b"\n", timeout=30).split(b"\n")[0]
        yield process, json.loads(line)["address"]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def eventually(check: Callable[[], T | None], timeout: float, pause: float = 0.05) -> T:
    """Poll `check` every `pause` seconds until it returns something, within `timeout`."""
    waiting = threading.Event()
    for _ in range(int(timeout / pause)):
        found = check()
        if found is not None:
            return found
        waiting.wait(pause)
    raise AssertionError(f"condition not met within {timeout}s")
