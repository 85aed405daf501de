"""Mutual TLS and role-based authorization on a real server bound to port 0: the right role
passes, a wrong role gets PERMISSION_DENIED, and certificates that are expired, foreign or
missing cannot connect at all. Health stays reachable on the plaintext health-only port."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from servicekit import authz, pki, serve
from servicekit.channels import connect
from servicekit.tls import TlsMaterial

SERVICE = "test.Runtime"


def node_of_caller(request: bytes, context: grpc.ServicerContext) -> bytes:
    caller = authz.identity(context)
    return (caller.node if caller else "").encode()


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.create_ca()


def material(ca: pki.Issued, issued: pki.Issued) -> TlsMaterial:
    return TlsMaterial(issued.certificate, issued.key, ca.certificate)


@pytest.fixture(scope="module")
def server(ca: pki.Issued) -> Iterator[serve.RunningServer]:
    handlers = {
        "ReportEvents": grpc.unary_unary_rpc_method_handler(node_of_caller),
        "ListAlerts": grpc.unary_unary_rpc_method_handler(lambda request, context: b"alerts"),
        "SetLearning": grpc.unary_unary_rpc_method_handler(lambda request, context: b"ok"),
    }
    registration = serve.Registration(
        SERVICE,
        lambda s: s.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        ),
        roles={"ReportEvents": [authz.AGENT]},
    )
    own = material(ca, pki.issue(ca, "runtime", roles=()))
    running = serve.start(
        [registration],
        listen="127.0.0.1:0",
        tracer_provider=TracerProvider(),
        tls=own,
        health_listen="127.0.0.1:0",
    )
    yield running
    running.stop(grace=1)


def call(server: serve.RunningServer, tls: TlsMaterial, method: str) -> bytes:
    with connect(server.address, timeout=5, credentials=tls.channel_credentials()) as channel:
        reply: bytes = channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=5)
    return reply


def refused(server: serve.RunningServer, tls: TlsMaterial | None, method: str) -> grpc.StatusCode:
    credentials = tls.channel_credentials() if tls else None
    channel = connect(server.address, timeout=5, credentials=credentials)
    with channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=5)
    return caught.value.code()  # type: ignore[attr-defined,no-any-return]


def test_roles_decide_what_a_caller_may_do(server: serve.RunningServer, ca: pki.Issued) -> None:
    agent = material(ca, pki.issue(ca, "agent-n1", roles=["agent"], node="n1"))
    reader = material(ca, pki.issue(ca, "grafana", roles=["reader"]))
    operator = material(ca, pki.issue(ca, "cli", roles=["operator", "reader"]))
    assert call(server, agent, "ReportEvents") == b"n1"  # the handler sees the node
    assert refused(server, agent, "ListAlerts") == grpc.StatusCode.PERMISSION_DENIED
    assert refused(server, reader, "ReportEvents") == grpc.StatusCode.PERMISSION_DENIED
    assert refused(server, reader, "SetLearning") == grpc.StatusCode.PERMISSION_DENIED
    assert call(server, reader, "ListAlerts") == b"alerts"
    assert call(server, operator, "SetLearning") == b"ok"


def test_denial_names_caller_and_needed_roles(server: serve.RunningServer, ca: pki.Issued) -> None:
    reader = material(ca, pki.issue(ca, "grafana", roles=["reader"]))
    channel = connect(server.address, timeout=5, credentials=reader.channel_credentials())
    with channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/ReportEvents")(b"", timeout=5)
    assert "grafana (roles: reader)" in caught.value.details()  # type: ignore[attr-defined]
    assert "agent" in caught.value.details()  # type: ignore[attr-defined]


def test_untrusted_certificates_cannot_connect(server: serve.RunningServer, ca: pki.Issued) -> None:
    foreign_ca = pki.create_ca("someone else")
    foreign = TlsMaterial(
        pki.issue(foreign_ca, "cli", roles=["admin"]).certificate,
        pki.issue(foreign_ca, "cli", roles=["admin"]).key,
        ca.certificate,
    )
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    expired = material(ca, pki.issue(ca, "cli", roles=["admin"], days=30, now=long_ago))
    for tls in (foreign, expired, None):
        assert refused(server, tls, "ListAlerts") == grpc.StatusCode.UNAVAILABLE


def test_health_only_port_is_plaintext_and_carries_nothing_else(
    server: serve.RunningServer,
) -> None:
    with connect(f"127.0.0.1:{server.health_port}", timeout=5) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(f"/{SERVICE}/ListAlerts")(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_certs_init_writes_secret_layout(tmp_path: Path) -> None:
    written = pki.init_directory(tmp_path, node="worker-1")
    names = {p.name for p in written}
    assert {"posture", "runtime", "policygen", "correlator", "cli", "agent-worker-1"} <= names
    for path in written:
        assert {"tls.crt", "tls.key", "ca.crt"} <= {f.name for f in path.iterdir()}
        assert (path / "tls.key").stat().st_mode & 0o077 == 0
    assert pki.identity_of((tmp_path / "agent-worker-1" / "tls.crt").read_bytes())[1:] == (
        frozenset({"agent"}),
        "worker-1",
    )
    before = (tmp_path / "cli" / "tls.crt").read_bytes()
    pki.init_directory(tmp_path, node="worker-1")
    assert (tmp_path / "cli" / "tls.crt").read_bytes() == before
