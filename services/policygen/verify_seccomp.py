"""Seccomp verification by real enforcement: the command runs in a child that loads the OCI
profile with libseccomp exactly as a runtime would (jail.py), then once more under strace with
the distinctive-errno variant to name every denied syscall (denials.py), and a probe child proves
an unlisted syscall is refused. Called by the servicer and `parallax seccomp verify`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servicekit.errors import InvalidArgument
from services.policygen import denials, syscalls
from services.policygen.jail import EXIT_SETUP, PROBE_ARGS

MAX_PROFILE_BYTES = 1024 * 1024
DEFAULT_TIMEOUT, MAX_TIMEOUT = 30.0, 600.0
TAIL_BYTES = 4096
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


def verify(request: VerifyRequest) -> Verification:
    """Run the command under the profile, name denials, and check the negative control."""
    if not request.argv:
        raise InvalidArgument("argv needs at least one element, the command to run")
    if not 0 < request.timeout <= MAX_TIMEOUT:
        raise InvalidArgument(f"timeout must be in (0, {MAX_TIMEOUT:.0f}] seconds")
    doc = parse_profile(request.profile_json)
    with tempfile.TemporaryDirectory(prefix="parallax-seccomp-") as scratch:
        path = Path(scratch) / "profile.json"
        path.write_text(request.profile_json)
        cwd = request.cwd or scratch
        env = request.env or {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
        run = _run([*_JAIL, str(path), "--", *request.argv], env, cwd, request.timeout)
        denied, traced = _trace(path, request, env, cwd, Path(scratch) / "trace.log")
        negative = _negative_control(doc, path, request.negative_syscall)
    reason = _failure(run, denied, negative)
    return Verification(not reason, run, denied, negative, reason, traced)


def _run(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> Run:
    started = time.monotonic()
    child = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    timed_out = False
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=10)
    elapsed = time.monotonic() - started
    code = child.returncode
    return Run(code if code >= 0 else -1, -code if code < 0 else 0, timed_out, elapsed, out, err)


def _trace(
    path: Path, request: VerifyRequest, env: dict[str, str], cwd: str, log: Path
) -> tuple[tuple[denials.Denial, ...], bool]:
    strace = shutil.which("strace")
    if strace is None:
        return (), False
    marker = ["--errno", str(denials.DENIAL_ERRNO)]
    argv = [strace, "-f", "-qq", "-n", "-o", str(log), "--", *_JAIL, str(path), *marker]
    _run([*argv, "--", *request.argv], env, cwd, request.timeout)
    text = log.read_text(errors="replace") if log.exists() else ""
    return denials.parse(text, syscalls.native_arch(), sys.executable), True


def _negative_control(doc: dict[str, Any], path: Path, wanted: str) -> NegativeControl:
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
    run = _run([*_JAIL, str(path), "--probe", name], env, str(path.parent), 10.0)
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
