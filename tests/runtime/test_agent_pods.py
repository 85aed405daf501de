"""Agents whose certificate names their pod, end to end: a real runtime server with mutual TLS
on 127.0.0.1:0 resolves the pod through the official `kubernetes` client against a local
Kubernetes API server (tests/kubeapi.py) and accepts a batch only for the node that pod runs
on. Unknown pods, other UIDs, other nodes and agent certificates naming neither node nor pod
get PERMISSION_DENIED; an API server that cannot answer gets UNAVAILABLE; nothing refused is
stored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import kubernetes.client
import pytest
from opentelemetry.sdk.trace import TracerProvider
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc

from servicekit import pki, serve, storage
from servicekit.pki import PodRef
from servicekit.tls import TlsMaterial
from services.runtime.agentnodes import AgentNodes
from services.runtime.engine import Engine
from services.runtime.kubepods import KubePods
from services.runtime.servicer import RuntimeServicer, registration
from services.runtime.store import RuntimeStore
from tests.kubeapi import KubeAPIServer
from tests.runtime import builders as b
from tests.runtime.server import Clock

NS = "parallax-agent"
TIMEOUT = 10
TTL = 30.0


def _pod(name: str, node: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/name": "agent"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "parallax-agent"}]},
        "status": {"phase": phase},
    }


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.create_ca()


@pytest.fixture
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


@pytest.fixture
def uids(kube: KubeAPIServer) -> dict[str, str]:
    """Agent pods on n1 and n2, and a finished one on n1: their UIDs by name."""
    pods = [_pod("agent-a", "n1"), _pod("agent-b", "n2"), _pod("agent-old", "n1", "Failed")]
    return {p["metadata"]["name"]: kube.add(p)["metadata"]["uid"] for p in pods}


@pytest.fixture
def ttl_clock() -> Clock:
    return Clock(0.0)


class Runtime:
    """A runtime server with mTLS and a way to report one batch as a given certificate."""

    def __init__(self, running: serve.RunningServer, engine: Engine, ca: pki.Issued) -> None:
        self.running, self.engine, self.ca = running, engine, ca
        self.sequence = 0

    def report(self, issued: pki.Issued, node: str) -> pb.ReportEventsResponse:
        self.sequence += 1
        request = b.batch(self.sequence, [b.wire_exec("/app/server")])
        request.node_name, request.agent_id = node, f"agent-{node}"
        # A bare channel without the kit's UNAVAILABLE retries: each refusal surfaces at once.
        credentials = grpc.ssl_channel_credentials(
            self.ca.certificate, issued.key, issued.certificate
        )
        with grpc.secure_channel(self.running.address, credentials) as channel:
            stub = pb_grpc.RuntimeServiceStub(channel)
            (ack,) = stub.ReportEvents(iter([request]), timeout=TIMEOUT)
        return ack

    def refused(self, issued: pki.Issued, node: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            self.report(issued, node)
        error: Any = caught.value
        return error.code(), error.details() or ""


@contextmanager
def _runtime(
    tmp_path: Path, ca: pki.Issued, api: kubernetes.client.ApiClient | None, clock: Clock
) -> Iterator[Runtime]:
    bound = storage.engine(f"sqlite:///{tmp_path / 'runtime.db'}")
    engine = Engine(RuntimeStore(bound), Clock(b.T0))
    agents = AgentNodes(KubePods(api) if api is not None else None, clock, namespace=NS, ttl=TTL)
    own = pki.issue(ca, "runtime", roles=())
    running = serve.start(
        [registration(RuntimeServicer(engine, agents))],
        listen="127.0.0.1:0",
        tracer_provider=TracerProvider(),
        tls=TlsMaterial(own.certificate, own.key, ca.certificate),
    )
    try:
        yield Runtime(running, engine, ca)
    finally:
        running.stop(grace=1)
        bound.dispose()


@pytest.fixture
def runtime(
    tmp_path: Path, ca: pki.Issued, kube: KubeAPIServer, ttl_clock: Clock
) -> Iterator[Runtime]:
    with kube.api_client() as api, _runtime(tmp_path, ca, api, ttl_clock) as running:
        yield running


def _agent(ca: pki.Issued, pod: PodRef | None = None, node: str = "") -> pki.Issued:
    return pki.issue(ca, f"agent-{pod.name if pod else node}", roles=["agent"], node=node, pod=pod)


def _pod_reads(kube: KubeAPIServer, name: str) -> int:
    path = f"/api/v1/namespaces/{NS}/pods/{name}"
    return sum(r.method == "GET" and r.path == path for r in kube.requests)


def test_an_agent_reports_for_the_node_its_pod_runs_on(
    runtime: Runtime, ca: pki.Issued, uids: dict[str, str]
) -> None:
    for pod in (PodRef(NS, "agent-a"), PodRef(NS, "agent-a", uids["agent-a"])):
        ack = runtime.report(_agent(ca, pod), "n1")
        assert ack.acknowledged_sequence == runtime.sequence
    assert set(runtime.engine.nodes) == {"n1"}


@pytest.mark.parametrize(
    ("pod", "node", "message"),
    [
        (PodRef(NS, "agent-a"), "n2", "agent-agent-a is the agent of node n1 (pod "
         "parallax-agent/agent-a); it may not report for 'n2'"),
        (PodRef(NS, "agent-zz"), "n1", "names pod parallax-agent/agent-zz, which does not exist"),
        (PodRef(NS, "agent-a", "0d3f7e2b-0000-4000-8000-000000000000"), "n1", "that pod is gone"),
        (PodRef(NS, "agent-old"), "n1", "which has terminated"),
        (PodRef("default", "agent-a"), "n1", "outside the agents' namespace parallax-agent"),
        (None, "n1", "names neither a node"),
    ],
    ids=["other-node", "unknown-pod", "uid-mismatch", "terminated", "other-namespace",
         "neither-node-nor-pod"],
)  # fmt: skip
def test_a_batch_for_another_node_is_refused(
    runtime: Runtime,
    ca: pki.Issued,
    uids: dict[str, str],
    pod: PodRef | None,
    node: str,
    message: str,
) -> None:
    code, details = runtime.refused(_agent(ca, pod), node)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message in details
    assert not runtime.engine.nodes  # the refused batch left nothing


def test_a_node_certificate_needs_no_api_server(
    runtime: Runtime, ca: pki.Issued, kube: KubeAPIServer
) -> None:
    runtime.report(_agent(ca, node="n1"), "n1")
    code, _ = runtime.refused(_agent(ca, node="n1"), "n2")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert not [r for r in kube.requests if "/pods/" in r.path]


def test_a_pod_node_is_trusted_for_the_ttl_then_read_again(
    runtime: Runtime, ca: pki.Issued, kube: KubeAPIServer, uids: dict[str, str], ttl_clock: Clock
) -> None:
    agent = _agent(ca, PodRef(NS, "agent-a"))
    runtime.report(agent, "n1")
    runtime.report(agent, "n1")
    assert _pod_reads(kube, "agent-a") == 1
    # The pod is deleted and a pod of the same name starts on n2.
    kube.delete(_pod("agent-a", "n1"))
    kube.add(_pod("agent-a", "n2"))
    ttl_clock.now += TTL - 1
    runtime.report(agent, "n1")  # still the cached answer
    assert _pod_reads(kube, "agent-a") == 1
    ttl_clock.now += 1
    code, details = runtime.refused(agent, "n1")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "agent of node n2" in details
    assert _pod_reads(kube, "agent-a") == 2
    runtime.report(agent, "n2")  # a certificate without the UID follows the name
    pinned = _agent(ca, PodRef(NS, "agent-a", uids["agent-a"]))
    code, details = runtime.refused(pinned, "n2")  # one with the UID does not
    assert code == grpc.StatusCode.PERMISSION_DENIED and "that pod is gone" in details


def test_an_api_server_that_refuses_the_runtime_means_unavailable(
    runtime: Runtime, ca: pki.Issued, kube: KubeAPIServer, uids: dict[str, str]
) -> None:
    kube.forbid("pods")
    code, details = runtime.refused(_agent(ca, PodRef(NS, "agent-a")), "n1")
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 403" in details and "nothing was accepted" in details
    assert not runtime.engine.nodes


def test_an_unreachable_api_server_means_unavailable(
    tmp_path: Path, ca: pki.Issued, ttl_clock: Clock
) -> None:
    with KubeAPIServer() as gone:
        url = gone.url
    configuration = kubernetes.client.Configuration(host=url)
    configuration.retries = 0
    api = kubernetes.client.ApiClient(configuration)
    with api, _runtime(tmp_path, ca, api, ttl_clock) as runtime:
        code, details = runtime.refused(_agent(ca, PodRef(NS, "agent-a")), "n1")
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "did not answer" in details


def test_without_kubernetes_access_a_pod_agent_is_refused(
    tmp_path: Path, ca: pki.Issued, ttl_clock: Clock
) -> None:
    with _runtime(tmp_path, ca, None, ttl_clock) as runtime:
        code, details = runtime.refused(_agent(ca, PodRef(NS, "agent-a")), "n1")
        runtime.report(_agent(ca, node="n1"), "n1")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "no Kubernetes access" in details
