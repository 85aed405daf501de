"""Server bootstrap shared by every service: the interceptor chain (tracing first, then error
mapping), the stock health servicer with a status per service, reflection, message limits,
an address file for `parallax up`, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from servicekit import logs, telemetry
from servicekit.authz import AuthorizationInterceptor, Policy
from servicekit.config import MAX_MESSAGE_BYTES, PARENT_VARIABLE, ServerSettings
from servicekit.interceptors import ErrorInterceptor
from servicekit.memory import tune_collector
from servicekit.telemetry import server_tracing
from servicekit.tls import TlsMaterial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """One gRPC service to mount: its full name, the generated `add_*_to_server` call, and the
    roles its methods need where they differ from `authz.default_roles`."""

    name: str
    add: Callable[[grpc.Server], None]
    roles: Mapping[str, Collection[str]] = field(default_factory=dict)


@dataclass
class RunningServer:
    """A started server, its bound port and its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    names: tuple[str, ...]
    tracer_provider: TracerProvider
    health_server: grpc.Server | None = None
    health_port: int = 0
    secure: bool = False
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        """Return `127.0.0.1:<port>` style address clients can dial."""
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for `grace` seconds, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)
        if self.health_server is not None:
            self.health_server.stop(0).wait(1)
        self.tracer_provider.force_flush(int(grace * 1000))

    def wait(self) -> None:
        """Block until the server has stopped."""
        self.server.wait_for_termination()


def _server(interceptors: Sequence[Any], max_workers: int) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )


def _bind(server: grpc.Server, listen: str, tls: TlsMaterial | None) -> int:
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, tls.server_credentials())
    if port == 0:
        raise OSError(f"could not bind {listen}")
    return port


def start(
    registrations: Sequence[Registration],
    *,
    listen: str,
    tracer_provider: TracerProvider,
    max_workers: int = 16,
    tls: TlsMaterial | None = None,
    health_listen: str | None = None,
) -> RunningServer:
    """Start a server for `registrations` on `listen` (port 0 picks a free port). With `tls`,
    callers must present a certificate from the CA and a role the method allows; without, the
    server is plaintext and open (local development only). `health_listen` adds a plaintext
    server carrying only the health service, for kubelet gRPC probes."""
    policy = Policy({m: roles for r in registrations for m, roles in r.roles.items()})
    interceptors = [server_tracing(tracer_provider), AuthorizationInterceptor(policy)]
    server = _server([*interceptors, ErrorInterceptor()], max_workers)
    for registration in registrations:
        registration.add(server)
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = tuple(r.name for r in registrations)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = _bind(server, listen, tls)
    health_server, health_port = None, 0
    if health_listen is not None:
        health_server = _server([], 2)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, health_server)
        health_port = _bind(health_server, health_listen, None)
        health_server.start()
    server.start()
    for name in ("", *names):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on port %d (%s)", ", ".join(names), port, "mTLS" if tls else "plaintext")
    secure = tls is not None
    return RunningServer(
        server, port, servicer, names, tracer_provider, health_server, health_port, secure
    )


def announce(run_dir: Path, service: str, running: RunningServer) -> Path:
    """Write `<run_dir>/<service>.json` with the address, pid and whether it speaks TLS, for
    `parallax up`/`status`, and print the same as one JSON line on stdout."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{service}.json"
    temporary = path.with_suffix(".tmp")
    record = {"address": running.address, "pid": os.getpid(), "tls": running.secure}
    temporary.write_text(json.dumps(record))
    temporary.replace(path)
    print(json.dumps({"service": service, **record}), flush=True)
    return path


def stop_on_signals(running: RunningServer, grace: float = 5.0) -> None:
    """Make SIGTERM and SIGINT shut `running` down gracefully (install before announcing)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=running.stop, args=(grace,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


_PR_SET_PDEATHSIG = 1


def follow_parent(env: Mapping[str, str]) -> None:
    """When a supervisor started this process (PARALLAX_PARENT_PID), end with it: the kernel
    sends SIGTERM when the parent dies, and a parent already gone ends the process now. Done
    here, after exec, because Python code between fork and exec in a threaded supervisor (gRPC)
    can hang; the signals the supervisor blocked while waiting are unblocked too."""
    parent = env.get(PARENT_VARIABLE, "")
    if not parent.isdigit():
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(f"the supervisor (pid {parent}) is gone")


def run(
    settings: ServerSettings, build: Callable[[TracerProvider], Sequence[Registration]]
) -> None:
    """Run a service process: logging, tracing, the servicers `build` returns, the address
    announcement, then serve until SIGTERM."""
    follow_parent(os.environ)
    logs.configure(settings.service, settings.log_level)
    provider = telemetry.tracer_provider(settings.service, os.environ)
    # Domain spans (one scan, one correlation pass) use the global provider, inside RPC spans.
    trace.set_tracer_provider(provider)
    running = start(
        build(provider),
        listen=settings.listen,
        tracer_provider=provider,
        tls=settings.tls,
        health_listen=settings.health_listen,
    )
    stop_on_signals(running, settings.grace_seconds)
    tune_collector()
    announce(settings.run_dir, settings.service, running)
    running.wait()
    provider.shutdown()
