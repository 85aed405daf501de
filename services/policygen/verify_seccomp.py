"""Seccomp verification by real enforcement: the command runs in a child that loads the OCI
profile with libseccomp exactly as a runtime would (jail.py), then once more under strace with
the distinctive-errno variant to name every denied syscall (denials.py), and a probe child proves
an unlisted syscall is refused. Every child runs in its own process group, dies with the service
(the jail arms PR_SET_PDEATHSIG) and is killed when the service stops or the caller cancels.
Called by the servicer and `parallax seccomp verify`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servicekit.errors import InvalidArgument, Unavailable
from services.policygen import denials, syscalls
from services.policygen.jail import EXIT_SETUP, PROBE_ARGS

MAX_PROFILE_BYTES = 1024 * 1024
DEFAULT_TIMEOUT, MAX_TIMEOUT = 30.0, 600.0
TAIL_BYTES = 4096
POLL_SECONDS = 0.2
NEGATIVE_CANDIDATES = tuple(PROBE_ARGS)
_JAIL = (sys.executable, "-m", "services.policygen.jail")


@dataclass(frozen=True)
class VerifyRequest:
    """A profile, the command to run under it and how."""

    profile_json: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    timeout: float = DEFAULT_TIMEOUT
    negative_syscall: str = ""


@dataclass(frozen=True)
class NegativeControl:
    """The unlisted syscall tried and whether the kernel refused it."""

    syscall: str
    refused: bool
    errno: int


@dataclass(frozen=True)
class Run:
    """How one run of the command ended."""

    exit_status: int
    signal: int
    timed_out: bool
    elapsed: float
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class Verification:
    """The result of a verification."""

    passed: bool
    run: Run
    denied: tuple[denials.Denial, ...]
    negative: NegativeControl
    failure_reason: str
    traced: bool


def parse_profile(text: str) -> dict[str, Any]:
    """Parse and sanity-check an OCI seccomp profile; InvalidArgument when it is not one."""
    if len(text.encode()) > MAX_PROFILE_BYTES:
        raise InvalidArgument(f"profile_json is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"profile_json is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("defaultAction"), str):
        raise InvalidArgument("profile_json needs a defaultAction (an OCI seccomp profile)")
    for arch in doc.get("architectures") or ():
        if arch not in syscalls.ARCHITECTURES:
            raise InvalidArgument(f"unknown architecture {arch!r} in profile_json")
    return doc


class _Exit:
    """Whether the process is exiting. Once the server has stopped, the interpreter joins the
    RPC threads (concurrent.futures' exit hook) before any `atexit` function runs; a hook
    registered after that one runs before it, so running verifications kill their children and
    end instead of running to their timeout. Registered on first use, from an RPC thread, so
    that the pool's hook exists already. The process has one, as it has one exit."""

    def __init__(self) -> None:
        self.event, self.lock, self.hooked = threading.Event(), threading.Lock(), False

    def watch(self) -> None:
        with self.lock:
            if not self.hooked:
                getattr(threading, "_register_atexit", lambda hook: None)(self.event.set)
                self.hooked = True


_EXIT = _Exit()


def _never() -> bool:
    return False


def verify(request: VerifyRequest, cancelled: Callable[[], bool] = _never) -> Verification:
    """Run the command under the profile, name denials, and check the negative control. When
    `cancelled()` turns true (the caller went away) or the service stops, every child is killed
    and Unavailable raised."""
    if not request.argv:
        raise InvalidArgument("argv needs at least one element, the command to run")
    if not 0 < request.timeout <= MAX_TIMEOUT:
        raise InvalidArgument(f"timeout must be in (0, {MAX_TIMEOUT:.0f}] seconds")
    doc = parse_profile(request.profile_json)
    _EXIT.watch()
    with tempfile.TemporaryDirectory(prefix="parallax-seccomp-") as scratch:
        path = Path(scratch) / "profile.json"
        path.write_text(request.profile_json)
        cwd = request.cwd or scratch
        env = request.env or {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
        run = _run(_jail(str(path), "--", *request.argv), env, cwd, request.timeout, cancelled)
        denied, traced = _trace(
            path, request, env, cwd, Path(scratch) / "trace.log", cancelled=cancelled
        )
        negative = _negative_control(doc, path, request.negative_syscall, cancelled)
    reason = _failure(run, denied, negative)
    return Verification(not reason, run, denied, negative, reason, traced)


def _jail(*args: str) -> list[str]:
    """The jail's command line; it dies with this process (the thread that starts it)."""
    return [*_JAIL, "--parent", str(os.getpid()), *args]


def _run(
    argv: list[str], env: dict[str, str], cwd: str, timeout: float, cancelled: Callable[[], bool]
) -> Run:
    started = time.monotonic()
    child = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        output = _wait(child, started + timeout, cancelled)
    except BaseException:
        _kill(child)
        raise
    timed_out = output is None
    if output is None:
        output = _kill(child)
    elapsed = time.monotonic() - started
    code = child.returncode
    out, err = output
    return Run(code if code >= 0 else -1, -code if code < 0 else 0, timed_out, elapsed, out, err)


def _wait(
    child: subprocess.Popen[bytes], deadline: float, cancelled: Callable[[], bool]
) -> tuple[bytes, bytes] | None:
    """The child's output once it ends, None at the deadline; Unavailable when cancelled."""
    while (left := deadline - time.monotonic()) > 0:
        if cancelled() or _EXIT.event.is_set():
            raise Unavailable("the verification was cancelled: policygen is stopping")
        try:
            return child.communicate(timeout=min(left, POLL_SECONDS))
        except subprocess.TimeoutExpired:
            continue  # retrying communicate() keeps the output read so far
    return None


def _kill(child: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Kill the child's process group (the command and anything it started) and reap it."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(child.pid, signal.SIGKILL)
    return child.communicate(timeout=10)


def _trace(
    path: Path,
    request: VerifyRequest,
    env: dict[str, str],
    cwd: str,
    log: Path,
    *,
    cancelled: Callable[[], bool],
) -> tuple[tuple[denials.Denial, ...], bool]:
    strace = shutil.which("strace")
    if strace is None:
        return (), False
    marker = ["--errno", str(denials.DENIAL_ERRNO)]
    # strace runs under an unfiltered jail so that it, too, dies with the service.
    traced = [strace, "-f", "-qq", "-n", "-o", str(log), "--", *_JAIL, str(path), *marker]
    argv = _jail("--no-filter", "--", *traced, "--", *request.argv)
    _run(argv, env, cwd, request.timeout, cancelled)
    text = log.read_text(errors="replace") if log.exists() else ""
    return denials.parse(text, syscalls.native_arch(), sys.executable), True


def _negative_control(
    doc: dict[str, Any], path: Path, wanted: str, cancelled: Callable[[], bool]
) -> NegativeControl:
    allowed = {
        name
        for rule in doc.get("syscalls") or ()
        if rule.get("action") != doc["defaultAction"]
        for name in rule.get("names") or ()
    }
    candidates = (wanted,) if wanted else NEGATIVE_CANDIDATES
    name = next((c for c in candidates if c not in allowed), "")
    if not name:
        return NegativeControl("", False, 0)
    env = {"PATH": "/usr/bin:/bin"}
    run = _run(_jail(str(path), "--probe", name), env, str(path.parent), 10.0, cancelled)
    if run.signal:  # a KILL or TRAP default action: refused by ending the process
        return NegativeControl(name, True, 0)
    refused = run.exit_status == doc.get("defaultErrnoRet", 1) and run.exit_status != EXIT_SETUP
    return NegativeControl(name, refused, run.exit_status if refused else 0)


def _failure(run: Run, denied: tuple[denials.Denial, ...], negative: NegativeControl) -> str:
    if run.timed_out:
        return f"the command did not finish within the timeout ({run.elapsed:.1f}s)"
    if run.signal:
        return f"the command was killed by signal {run.signal} ({signal.Signals(run.signal).name})"
    if run.exit_status != 0:
        named = ", ".join(sorted({d.name for d in denied})) or "none named"
        return f"the command exited with status {run.exit_status}; denied syscalls: {named}"
    if denied:
        named = ", ".join(sorted({d.name for d in denied}))
        return f"the command exited 0 but the profile denied {named}: it may fail silently"
    if not negative.refused:
        what = negative.syscall or "every candidate syscall"
        return f"the negative control failed: {what} was not refused (the profile is not enforcing)"
    return ""


def tail(data: bytes) -> str:
    """Return the last 4 KiB of `data` as text."""
    return data[-TAIL_BYTES:].decode(errors="replace")
