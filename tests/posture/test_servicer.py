"""PostureService through a real stub to a real server on port 0 with the real interceptor
chain: scans of inline manifests, findings with filters, paging and history, the control
catalog, WatchFindings, and the status codes of bad requests."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from parallax.posture.v1 import posture_service_pb2 as pb
from parallax.posture.v1 import posture_service_pb2_grpc as pb_grpc
from parallax.posture.v1 import scan_pb2
from parallax.type.v1 import change_pb2, severity_pb2, source_pb2

from servicekit.channels import connect
from tests.servers import posture_server

PRIVILEGED = b"""
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart}}
    spec:
      containers:
      - name: cart
        image: shop/cart:1.0
        securityContext: {privileged: true}
"""
HARDENED = PRIVILEGED.replace(b"privileged: true", b"privileged: false")


@pytest.fixture
def stub(
    tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> Iterator[pb_grpc.PostureServiceStub]:
    with posture_server(tmp_path, spans[0]) as running:
        channel = connect(running.address, timeout=10)
        yield pb_grpc.PostureServiceStub(channel)
        channel.close()


def create(stub: pb_grpc.PostureServiceStub, *files: tuple[str, bytes]) -> scan_pb2.Scan:
    manifests = [source_pb2.Manifest(uri=uri, content=content) for uri, content in files]
    request = pb.CreateScanRequest(
        manifests=scan_pb2.ManifestSet(manifests=manifests), wait_for_completion=True
    )
    return stub.CreateScan(request, timeout=30).scan


def test_scan_inline_manifests_and_list_findings(stub: pb_grpc.PostureServiceStub) -> None:
    scan = create(stub, ("deploy/cart.yaml", PRIVILEGED))
    assert scan.state == scan_pb2.SCAN_STATE_SUCCEEDED
    assert scan.objects_scanned == 1
    assert stub.GetScan(pb.GetScanRequest(name=scan.name), timeout=5).scan.name == scan.name
    found = stub.ListFindings(pb.ListFindingsRequest(scan=scan.name), timeout=5)
    privileged = [f for f in found.findings if f.control_id == "CTR-01"]
    assert len(privileged) == 1
    finding = privileged[0]
    assert finding.field_path == "spec.template.spec.containers[0].securityContext.privileged"
    assert finding.object.location.uri == "deploy/cart.yaml"
    assert finding.object.kind == "Deployment" and finding.object.object_name == "cart"
    assert finding.owner.namespace == "shop" and finding.owner.name == "cart"
    assert finding.remediation
    assert found.total_size == len(found.findings)


def test_history_across_scans_of_the_same_source(stub: pb_grpc.PostureServiceStub) -> None:
    create(stub, ("cart.yaml", PRIVILEGED))
    second = create(stub, ("cart.yaml", HARDENED))
    assert second.previous_scan
    assert second.finding_counts.fixed_count >= 1
    request = pb.ListFindingsRequest(scan=second.name, control_ids=["CTR-01"], include_fixed=True)
    (fixed,) = stub.ListFindings(request, timeout=5).findings
    assert fixed.history_state == 3  # FINDING_HISTORY_STATE_FIXED


def test_findings_filters_and_paging(stub: pb_grpc.PostureServiceStub) -> None:
    create(stub, ("cart.yaml", PRIVILEGED))
    everything = stub.ListFindings(pb.ListFindingsRequest(page_size=1000), timeout=5)
    names: list[str] = []
    token = ""
    while True:
        page = stub.ListFindings(pb.ListFindingsRequest(page_size=2, page_token=token), timeout=5)
        names += [f.name for f in page.findings]
        token = page.next_page_token
        if not token:
            break
    assert sorted(names) == sorted(f.name for f in everything.findings)
    high = stub.ListFindings(
        pb.ListFindingsRequest(minimum_severity=severity_pb2.SEVERITY_HIGH), timeout=5
    )
    assert high.findings and all(f.severity >= severity_pb2.SEVERITY_HIGH for f in high.findings)


def test_malformed_yaml_gives_a_partial_scan_that_keeps_the_rest(
    stub: pb_grpc.PostureServiceStub,
) -> None:
    scan = create(stub, ("bad.yaml", b"kind: [unclosed\n"), ("cart.yaml", PRIVILEGED))
    assert scan.state == scan_pb2.SCAN_STATE_PARTIAL
    assert scan.errors[0].location.uri == "bad.yaml"
    assert scan.objects_scanned == 1


def test_list_controls_pages_through_the_catalog(stub: pb_grpc.PostureServiceStub) -> None:
    ids: list[str] = []
    token = ""
    while True:
        page = stub.ListControls(pb.ListControlsRequest(page_size=25, page_token=token), timeout=5)
        ids += [c.control_id for c in page.controls]
        token = page.next_page_token
        if not token:
            break
    assert len(ids) == len(set(ids)) >= 70
    nsa = stub.ListControls(pb.ListControlsRequest(framework="NSA", page_size=1000), timeout=5)
    assert 0 < len(nsa.controls) < len(ids)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.GetScanRequest(name="scans/missing"), grpc.StatusCode.NOT_FOUND),
        (pb.GetScanRequest(name="nonsense"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ListFindingsRequest(page_size=-5), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ListFindingsRequest(page_token="forged"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.CreateScanRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown-scan", "bad-name", "negative-page", "forged-token", "no-target"],
)
def test_bad_requests_get_canonical_codes(
    stub: pb_grpc.PostureServiceStub, request_: object, code: grpc.StatusCode
) -> None:
    method = {
        pb.GetScanRequest: stub.GetScan,
        pb.ListFindingsRequest: stub.ListFindings,
        pb.CreateScanRequest: stub.CreateScan,
    }[type(request_)]
    with pytest.raises(grpc.RpcError) as caught:
        method(request_, timeout=5)
    assert caught.value.code() == code  # type: ignore[attr-defined]


def test_cluster_scan_without_cluster_access_is_failed_precondition(
    stub: pb_grpc.PostureServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateScan(pb.CreateScanRequest(cluster=scan_pb2.ClusterTarget()), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]


def test_watch_findings_sends_current_then_changes(stub: pb_grpc.PostureServiceStub) -> None:
    create(stub, ("cart.yaml", PRIVILEGED))
    stream = stub.WatchFindings(pb.WatchFindingsRequest(source_key="cart.yaml"), timeout=30)
    received: queue.Queue[pb.WatchFindingsResponse] = queue.Queue()

    def pump() -> None:
        try:
            for response in stream:
                received.put(response)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    current = []
    while (message := received.get(timeout=10)).change_type != change_pb2.CHANGE_TYPE_SYNCED:
        current.append(message)
    assert current and all(m.change_type == change_pb2.CHANGE_TYPE_CURRENT for m in current)
    create(stub, ("cart.yaml", HARDENED))
    changes = set()
    while ("CTR-01", change_pb2.CHANGE_TYPE_REMOVED) not in changes:
        message = received.get(timeout=10)
        changes.add((message.finding.control_id, message.change_type))
    assert all(
        change in (change_pb2.CHANGE_TYPE_ADDED, change_pb2.CHANGE_TYPE_REMOVED)
        for _, change in changes
    )
    # The traced channel wraps streams in a generator; closing the channel (fixture) ends it.


def test_scan_is_traced_inside_the_rpc(
    stub: pb_grpc.PostureServiceStub, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    create(stub, ("cart.yaml", PRIVILEGED))
    _, exporter = spans
    names = [s.name for s in exporter.get_finished_spans()]
    assert "/parallax.posture.v1.PostureService/CreateScan" in names
