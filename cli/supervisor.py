"""Runs the four services as separate local processes for `parallax up` and the demo: starts
them in dependency order, learns each bound address from its announcement line, and stops them
all (SIGTERM, then SIGKILL after a grace period) so that no process outlives the supervisor."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from servicekit.config import PARENT_VARIABLE

SERVICES = ("posture", "runtime", "policygen", "correlator")
DEFAULT_PORTS = {"posture": 50051, "runtime": 50052, "policygen": 50053, "correlator": 50054}
UPSTREAMS = {
    "policygen": {"PARALLAX_RUNTIME_ADDRESS": "runtime"},
    "correlator": {
        "PARALLAX_POSTURE_ADDRESS": "posture",
        "PARALLAX_RUNTIME_ADDRESS": "runtime",
        "PARALLAX_POLICYGEN_ADDRESS": "policygen",
    },
}


class StartError(RuntimeError):
    """A service failed to start; the message names it and quotes its last log line."""


@dataclass
class Child:
    """One running service process."""

    name: str
    process: subprocess.Popen[bytes]
    address: str = ""
    log_path: Path = field(default_factory=Path)


@dataclass
class Stack:
    """The set of service processes `parallax up` runs under one data directory."""

    data_dir: Path
    base_port: int = 50051
    insecure: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Per-service additions to `env`, applied last (e.g. each service its own DATABASE_URL).
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> None:
        """Start every service, upstreams first, and wait for each announcement."""
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if not self.insecure:
            from servicekit import pki  # cryptography loads only when certificates are needed

            pki.init_directory(self.tls_dir, node=socket.gethostname())
        try:
            for name in SERVICES:
                self.children[name] = self._spawn(name)
                self._await_announcement(self.children[name], time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def tls_dir(self) -> Path:
        """Where the development CA and the components' certificates live."""
        return self.data_dir / "tls"

    def _port(self, name: str) -> int:
        if self.base_port == 0:
            return 0
        return self.base_port + SERVICES.index(name)

    def _spawn(self, name: str) -> Child:
        env = dict(self.env)
        env["PARALLAX_DATA"] = str(self.data_dir)
        env["PARALLAX_LISTEN"] = f"127.0.0.1:{self._port(name)}"
        env.pop("PARALLAX_TLS_DIR", None)
        env.pop("PARALLAX_INSECURE", None)
        if self.insecure:
            env["PARALLAX_INSECURE"] = "true"
        else:
            env["PARALLAX_TLS_DIR"] = str(self.tls_dir / name)
        for variable, upstream in UPSTREAMS.get(name, {}).items():
            env[variable] = self.children[upstream].address
        env.update(self.service_env.get(name, {}))
        env[PARENT_VARIABLE] = str(os.getpid())  # the service ends with us (serve.follow_parent)
        log_path = self.data_dir / "logs" / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return Child(name, process, log_path=log_path)

    def _await_announcement(self, child: Child, deadline: float) -> None:
        assert child.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(child.process.stdout, selectors.EVENT_READ)
            remaining = deadline - time.monotonic()
            ready = selector.select(timeout=max(remaining, 0))
        line = child.process.stdout.readline() if ready else b""
        if not line:
            raise StartError(f"{child.name} did not start: {_last_line(child.log_path)}")
        child.address = json.loads(line)["address"]

    def stop(self, grace: float = 10.0) -> None:
        """Send SIGTERM to every child, wait up to `grace` seconds, then SIGKILL the rest."""
        for child in reversed(list(self.children.values())):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children.values():
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            if child.process.stdout is not None:
                child.process.stdout.close()
        for name in self.children:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "run" / f"{name}.json").unlink()
        self.children.clear()

    def wait(self) -> str:
        """Block until SIGTERM/SIGINT arrives or a child exits; return which happened."""
        signals = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            while True:
                dead = [c for c in self.children.values() if c.process.poll() is not None]
                if dead:
                    child = dead[0]
                    code = child.process.returncode
                    return f"{child.name} exited ({code}): {_last_line(child.log_path)}"
                signum = signal.sigwait(signals)
                if signum != signal.SIGCHLD:
                    return f"received {signal.Signals(signum).name}"
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log written"
    return lines[-1] if lines else "it exited without logging anything"


@dataclass(frozen=True)
class Announcement:
    """What a running service wrote about itself: where it listens and whether it speaks TLS."""

    address: str
    tls: bool


def announced(data_dir: Path) -> dict[str, Announcement]:
    """Return what each service announced under `data_dir`, by service name."""
    found: dict[str, Announcement] = {}
    for name in SERVICES:
        path = data_dir / "run" / f"{name}.json"
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            record = json.loads(path.read_text())
            found[name] = Announcement(str(record["address"]), bool(record.get("tls")))
    return found
