"""The four services as separate processes with mutual TLS and PostgreSQL (each its own
database): wrong roles and wrong nodes get PERMISSION_DENIED, and expired, foreign and missing
certificates cannot connect at all."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parallax.posture.v1 import posture_service_pb2 as posture_pb
from parallax.posture.v1 import posture_service_pb2_grpc as posture_grpc
from parallax.posture.v1 import scan_pb2
from parallax.runtime.v1 import runtime_service_pb2 as runtime_pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as runtime_grpc
from parallax.type.v1 import source_pb2, workload_pb2
from sqlalchemy.engine import make_url

from cli.supervisor import SERVICES, Stack
from servicekit import pki
from tests import postgres
from tests.runtime import builders

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NODE = "n1"  # the node of the agent certificate; builders.batch reports for it
TIMEOUT = 10


@pytest.fixture(scope="module")
def databases(postgres_url: str) -> dict[str, str]:
    """A fresh database per service, by service name."""
    return {name: postgres.fresh_database(postgres_url) for name in SERVICES}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, databases: dict[str, str]) -> Iterator[Stack]:
    service_env = {name: {"DATABASE_URL": url} for name, url in databases.items()}
    running = Stack(tmp_path_factory.mktemp("secure"), base_port=0, service_env=service_env)
    running.start(timeout=60)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ca(stack: Stack) -> pki.Issued:
    """The CA `parallax up` created for this stack, which the services trust."""
    directory = stack.tls_dir / "ca"
    return pki.Issued((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())


def _channel(stack: Stack, service: str, issued: pki.Issued, trust: bytes) -> grpc.Channel:
    # A bare channel, without the kit's retries: a refused handshake must surface at once.
    credentials = grpc.ssl_channel_credentials(trust, issued.key, issued.certificate)
    return grpc.secure_channel(stack.children[service].address, credentials)


def _refused(call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call(request, timeout=TIMEOUT)
        if not hasattr(result, "SerializeToString"):  # a stream: read it to get its status
            list(result)
    error: Any = caught.value
    return error.code(), error.details() or ""


def _code(call: Callable[..., Any], request: Any) -> grpc.StatusCode:
    return _refused(call, request)[0]


def _workload() -> workload_pb2.WorkloadRef:
    return workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")


def _scan_request() -> posture_pb.CreateScanRequest:
    manifest = source_pb2.Manifest(uri="pod.yaml", content=b"apiVersion: v1\nkind: Pod\n")
    return posture_pb.CreateScanRequest(manifests=scan_pb2.ManifestSet(manifests=[manifest]))


def test_each_service_keeps_its_state_in_its_own_database(
    stack: Stack, databases: dict[str, str]
) -> None:
    tables = {}
    for name in ("posture", "runtime"):  # the services that store something today
        url = make_url(databases[name])
        with psycopg.connect(
            host=url.query["host"], user=url.username, dbname=url.database
        ) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables[name] = {row[0] for row in rows}
    assert tables["posture"] and tables["runtime"]
    assert not tables["posture"] & tables["runtime"]
    assert not list(stack.data_dir.glob("*.db"))  # no SQLite fallback


def test_a_reader_reads_but_may_not_write(stack: Stack, ca: pki.Issued) -> None:
    reader = pki.issue(ca, "dashboard", roles=["reader"])
    with _channel(stack, "runtime", reader, ca.certificate) as channel:
        runtime = runtime_grpc.RuntimeServiceStub(channel)
        runtime.ListAlerts(runtime_pb.ListAlertsRequest(), timeout=TIMEOUT)
        learn = runtime_pb.SetLearningRequest(
            workload=_workload(), enabled=True, learning_window=Duration(seconds=60)
        )
        code, details = _refused(runtime.SetLearning, learn)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "dashboard (roles: reader) may not call" in details
    with _channel(stack, "posture", reader, ca.certificate) as channel:
        posture = posture_grpc.PostureServiceStub(channel)
        posture.ListScans(posture_pb.ListScansRequest(), timeout=TIMEOUT)
        assert _code(posture.CreateScan, _scan_request()) == grpc.StatusCode.PERMISSION_DENIED


def test_an_agent_reports_only_for_the_node_in_its_certificate(
    stack: Stack, ca: pki.Issued
) -> None:
    agent = pki.issue(ca, f"agent-{NODE}", roles=["agent"], node=NODE)
    own = builders.batch(1, [builders.wire_exec("/app/server")])
    other = runtime_pb.ReportEventsRequest()
    other.CopyFrom(own)
    other.node_name, other.agent_id = "n2", "agent-n2"
    with _channel(stack, "runtime", agent, ca.certificate) as channel:
        runtime = runtime_grpc.RuntimeServiceStub(channel)
        (ack,) = runtime.ReportEvents(iter([own]), timeout=TIMEOUT)
        assert ack.acknowledged_sequence == 1 and not ack.duplicate
        code, details = _refused(
            lambda r, timeout: runtime.ReportEvents(iter([r]), timeout=timeout), other
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "it may not report for 'n2'" in details
    reader = pki.issue(ca, "dashboard", roles=["reader"])
    with _channel(stack, "runtime", reader, ca.certificate) as channel:
        nodes = runtime_grpc.RuntimeServiceStub(channel).ListNodes(
            runtime_pb.ListNodesRequest(), timeout=TIMEOUT
        )
    assert [n.name for n in nodes.nodes] == [f"nodes/{NODE}"]  # the refused batch left nothing


def test_an_agent_may_not_call_read_apis(stack: Stack, ca: pki.Issued) -> None:
    agent = pki.issue(ca, f"agent-{NODE}", roles=["agent"], node=NODE)
    with _channel(stack, "runtime", agent, ca.certificate) as channel:
        runtime = runtime_grpc.RuntimeServiceStub(channel)
        request = runtime_pb.ListAlertsRequest()
        assert _code(runtime.ListAlerts, request) == grpc.StatusCode.PERMISSION_DENIED
    with _channel(stack, "posture", agent, ca.certificate) as channel:
        posture = posture_grpc.PostureServiceStub(channel)
        request_ = posture_pb.ListScansRequest()
        assert _code(posture.ListScans, request_) == grpc.StatusCode.PERMISSION_DENIED


def _expired(ca: pki.Issued) -> pki.Issued:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    return pki.issue(ca, "cli", roles=["admin"], days=1, now=past)


def _foreign(ca: pki.Issued) -> pki.Issued:
    return pki.issue(pki.create_ca("Someone else's CA"), "cli", roles=["admin"])


@pytest.mark.parametrize("make", [_expired, _foreign], ids=["expired", "foreign-ca"])
@pytest.mark.parametrize("service", SERVICES)
def test_an_expired_or_foreign_certificate_cannot_connect(
    stack: Stack, ca: pki.Issued, service: str, make: Callable[[pki.Issued], pki.Issued]
) -> None:
    # The client trusts the real CA, so only the server's check of its certificate can fail.
    with _channel(stack, service, make(ca), ca.certificate) as channel:
        assert _health_code(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", SERVICES)
def test_a_plaintext_client_cannot_connect(stack: Stack, service: str) -> None:
    with grpc.insecure_channel(stack.children[service].address) as channel:
        assert _health_code(channel) == grpc.StatusCode.UNAVAILABLE


def _health_code(channel: grpc.Channel) -> grpc.StatusCode:
    health = health_pb2_grpc.HealthStub(channel)
    return _code(health.Check, health_pb2.HealthCheckRequest())


def test_a_valid_certificate_connects(stack: Stack, ca: pki.Issued) -> None:
    # The control for the refusals above: same channel, a current certificate of the CA.
    for service in SERVICES:
        with _channel(stack, service, pki.issue(ca, "probe", roles=[]), ca.certificate) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
