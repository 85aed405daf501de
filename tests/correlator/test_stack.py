"""The correlator with posture, runtime and policygen as separate processes over mutual TLS: a
posture scan plus reported runtime events give the expected verdicts; NOT_EXERCISED findings
point at a hardening patch verification accepts; behaviour after COMPLETE marks the seccomp
recommendation STALE and yields a re-verified successor for review, in one trace across the
services; incidents, risks and in-use vulnerabilities come out of the same data."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from parallax.correlator.v1 import correlator_service_pb2 as pb
from parallax.correlator.v1 import correlator_service_pb2_grpc as pb_grpc
from parallax.correlator.v1 import evidence_pb2, vulnerability_pb2
from parallax.posture.v1 import posture_service_pb2 as po
from parallax.posture.v1 import posture_service_pb2_grpc as po_grpc
from parallax.posture.v1 import scan_pb2
from parallax.runtime.v1 import profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as rt
from parallax.runtime.v1 import runtime_service_pb2_grpc as rt_grpc
from parallax.type.v1 import source_pb2, workload_pb2

from cli.supervisor import Stack
from servicekit.channels import connect
from servicekit.tls import TlsMaterial
from tests.collector import Collector
from tests.correlator import shop
from tests.processes import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("strace"), reason="needs strace to record /bin/true"),
    pytest.mark.timeout(240),
]

V = evidence_pb2


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("stack")
    (data / "manifests").mkdir()
    (data / "manifests" / "deploy.yaml").write_text(shop.MANIFESTS)
    env = {
        **os.environ,
        "PARALLAX_TICK_SECONDS": "0.1",
        "PARALLAX_LOOP_SECONDS": "0.5",
        "PARALLAX_MANIFEST_ROOT": str(data / "manifests"),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
    }
    running = Stack(data, base_port=0, env=env)
    running.start()
    yield running
    running.stop()


def channel(stack: Stack, service: str, identity: str = "cli") -> grpc.Channel:
    tls = TlsMaterial.load(stack.tls_dir / identity)
    return connect(
        stack.children[service].address, timeout=30, credentials=tls.channel_credentials()
    )


@pytest.fixture(scope="module")
def correlator(stack: Stack) -> Iterator[pb_grpc.CorrelatorServiceStub]:
    with channel(stack, "correlator") as ch:
        yield pb_grpc.CorrelatorServiceStub(ch)


@pytest.fixture(scope="module")
def learned(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Scan the manifests, learn the cart container until COMPLETE; return the node name."""
    node = socket.gethostname()
    numbers = shop.true_syscalls(tmp_path_factory.mktemp("trace") / "true.log")
    with channel(stack, "posture") as ch:
        manifest = source_pb2.Manifest(uri="deploy.yaml", content=shop.MANIFESTS.encode())
        request = po.CreateScanRequest(
            manifests=scan_pb2.ManifestSet(manifests=[manifest]), wait_for_completion=True
        )
        assert po_grpc.PostureServiceStub(ch).CreateScan(request, timeout=60).scan.state == 2
    with channel(stack, "runtime") as ch:
        runtime = rt_grpc.RuntimeServiceStub(ch)
        runtime.SetLearning(
            rt.SetLearningRequest(
                workload=shop.CART, enabled=True, learning_window=Duration(seconds=1)
            ),
            timeout=10,
        )
        report(stack, node, 1, shop.learning_events(numbers))
        ref = workload_pb2.WorkloadRef(
            namespace="shop", kind="Deployment", name="cart", container="cart"
        )

        def complete() -> bool | None:
            state = runtime.GetProfile(rt.GetProfileRequest(workload=ref), timeout=10).profile.state
            return True if state == profile_pb2.PROFILE_STATE_COMPLETE else None

        eventually(complete, timeout=30, pause=0.1)
    return node


def report(stack: Stack, node: str, sequence: int, events: list[Any]) -> None:
    with channel(stack, "runtime", f"agent-{node}") as ch:
        acks = list(
            rt_grpc.RuntimeServiceStub(ch).ReportEvents(
                iter([shop.batch(node, sequence, events)]), timeout=30
            )
        )
    assert [a.acknowledged_sequence for a in acks] == [sequence]


def recommendations(stub: pb_grpc.CorrelatorServiceStub, kind: int = 0) -> list[Any]:
    request = pb.ListRecommendationsRequest(workload=shop.CART, kind=kind)  # type: ignore[arg-type]
    return list(stub.ListRecommendations(request, timeout=30).recommendations)


def test_verdicts_and_hardening_from_a_scan_and_a_profile(
    learned: str, correlator: pb_grpc.CorrelatorServiceStub
) -> None:
    eventually(lambda: recommendations(correlator, 3) or None, timeout=90, pause=0.1)
    context = correlator.GetWorkloadContext(
        pb.GetWorkloadContextRequest(workload=shop.CART), timeout=60
    ).workload_context
    verdicts = {f.finding.control_id: f for f in context.findings}
    expected = {
        "CTR-01": V.RUNTIME_VERDICT_EXERCISED,
        "POD-05": V.RUNTIME_VERDICT_EXERCISED,
        "SA-01": V.RUNTIME_VERDICT_EXERCISED,
        "POD-03": V.RUNTIME_VERDICT_EXERCISED,
        "NET-01": V.RUNTIME_VERDICT_EXERCISED,
        "CTR-06": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "CTR-08": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "CTR-02": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "CTR-04": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "CTR-03": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "POD-06": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "POD-07": V.RUNTIME_VERDICT_NOT_EXERCISED,
        "SEC-03": V.RUNTIME_VERDICT_NOT_EXERCISED,
    }
    got = {c: verdicts[c].verdict for c in expected if c in verdicts}
    assert got == expected, {c: verdicts[c].verdict_reason for c in got}
    assert "token read by /bin/true" in verdicts["SA-01"].verdict_reason
    hardening = {r.name: r for r in recommendations(correlator, 3)}
    closing = verdicts["CTR-08"].recommendation
    assert closing in hardening, "NOT_EXERCISED links the hardening patch that removes it"
    patch = hardening[closing]
    assert patch.readiness_state == 3, patch.verification_summary  # READY: verification accepted
    assert "CTR-08" in patch.closes_control_ids and "drop" in patch.hardening_patch.patch_yaml
    assert context.service_account.cluster_admin and context.exposure.exposed
    assert context.risk.rank == 1 and context.risk.score > 50


def test_new_behaviour_after_complete_makes_a_reviewed_successor_in_one_trace(
    stack: Stack,
    learned: str,
    correlator: pb_grpc.CorrelatorServiceStub,
    collector: Collector,
) -> None:
    first = eventually(lambda: recommendations(correlator, 1) or None, timeout=90, pause=0.1)
    assert first[0].readiness_state == 3, first[0].verification_summary
    report(stack, learned, 2, shop.after_complete_events())

    def successor() -> tuple[Any, Any] | None:
        found = {r.name: r for r in recommendations(correlator, 1)}
        fresh = [r for r in found.values() if r.supersedes and r.state == 1]
        return (found[fresh[0].supersedes], fresh[0]) if fresh else None

    stale, fresh = eventually(successor, timeout=90, pause=0.1)
    assert stale.state == 2 and "ptrace" in stale.state_reason
    assert fresh.review_required and "ptrace" in fresh.review_diff
    assert fresh.readiness_state == 3, fresh.verification_summary
    assert fresh.seccomp_verification.passed
    assert "ptrace" in fresh.seccomp_profile.syscall_names

    def spanning() -> set[str] | None:
        spans = [
            (rs.resource, s)
            for r in collector.traces
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        roots = {s.trace_id for _, s in spans if s.name == "correlator.regenerate"}
        services = {
            a.value.string_value
            for res, s in spans
            if s.trace_id in roots
            for a in res.attributes
            if a.key == "service.name"
        }
        wanted = {"parallax-correlator", "parallax-runtime", "parallax-policygen"}
        return services if wanted <= services else None

    assert "parallax-posture" in eventually(spanning, timeout=30, pause=0.1)


def test_incidents_risks_and_vulnerabilities(
    learned: str, correlator: pb_grpc.CorrelatorServiceStub
) -> None:
    def shell() -> Any:
        found = correlator.ListIncidents(pb.ListIncidentsRequest(workload=shop.CART), timeout=30)
        return next((i for i in found.incidents if i.alert.rule_id == "R0002"), None)

    incident = eventually(shell, timeout=90, pause=0.1)
    assert incident.severity == 4 and "privileged" in incident.title
    assert any(s.mitre_technique_id == "T1611" for s in incident.attack_path_steps)
    risks = correlator.ListRisks(pb.ListRisksRequest(namespace="shop"), timeout=60).risks
    assert risks[0].workload.name == "cart" and {t.term for t in risks[0].terms} >= {"exposure"}
    content = (Path(__file__).parent / "testdata" / "trivy-cart.json").read_bytes()
    correlator.ImportVulnerabilityReport(
        pb.ImportVulnerabilityReportRequest(
            format=vulnerability_pb2.VULNERABILITY_REPORT_FORMAT_TRIVY_JSON,
            image_ref="ghcr.io/acme/cart:1.4",
            image_digest=shop.DIGEST,
            content=content,
        ),
        timeout=60,
    )
    listed = correlator.ListVulnerabilities(pb.ListVulnerabilitiesRequest(), timeout=30)
    verdicts = {v.vulnerability_id: v.usage_verdict for v in listed.vulnerabilities}
    assert verdicts == {"CVE-2024-0727": 1, "CVE-2024-2398": 2, "CVE-2023-45853": 3}
    vex = correlator.ExportVex(pb.ExportVexRequest(), timeout=30).openvex_json
    assert "CVE-2024-2398" in vex and "CVE-2024-0727" not in vex
    with pytest.raises(grpc.RpcError) as caught:
        correlator.ListRisks(pb.ListRisksRequest(page_size=-1), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
