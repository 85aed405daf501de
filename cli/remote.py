"""`parallax scan --posture ADDR`: submits the scan to a posture service and reads the findings
back through the contract, so the output is the same as an in-process scan's."""

from __future__ import annotations

from collections.abc import Iterator

from parallax.posture.v1 import finding_pb2, scan_pb2
from parallax.posture.v1 import posture_service_pb2 as pb
from parallax.posture.v1 import posture_service_pb2_grpc as pb_grpc
from parallax.type.v1 import source_pb2

from cli.connection import channel
from servicekit.tls import TlsMaterial
from services.posture import loader, wire
from services.posture.domain import ScanError, ScanReport
from services.posture.suppress import SuppressionConfig

TIMEOUT = 120.0


def remote_scan(
    address: str,
    tls: TlsMaterial | None,
    paths: list[str],
    cluster: bool,
    context: str,
    frameworks: list[str],
    config: SuppressionConfig | None,
) -> ScanReport:
    """Run the scan on the posture service at `address` and return its report."""
    request = pb.CreateScanRequest(frameworks=frameworks, wait_for_completion=True)
    read_errors: list[ScanError] = []
    if cluster:
        request.cluster.CopyFrom(scan_pb2.ClusterTarget(kubeconfig_context=context))
    else:
        sources, read_errors = loader.read_sources(paths)
        manifests = [source_pb2.Manifest(uri=uri, content=data) for uri, data in sources]
        request.manifests.CopyFrom(scan_pb2.ManifestSet(manifests=manifests))
    for rule in config.rules if config else ():
        request.suppressions.add(
            control_id=rule.control,
            namespace=_glob(rule.namespace),
            kind=_glob(rule.kind),
            object_name=_glob(rule.name),
            reason=rule.reason,
        )
    with channel(address, tls, timeout=TIMEOUT) as opened:
        stub = pb_grpc.PostureServiceStub(opened)
        scan = stub.CreateScan(request, timeout=TIMEOUT).scan
        findings = [wire.finding_from_wire(f) for f in _all_findings(stub, scan.name)]
    errors = read_errors + [wire.scan_error_from_wire(e) for e in scan.errors]
    return ScanReport(tuple(findings), tuple(errors), scan.objects_scanned)


def _all_findings(stub: pb_grpc.PostureServiceStub, scan: str) -> Iterator[finding_pb2.Finding]:
    token = ""
    while True:
        request = pb.ListFindingsRequest(
            scan=scan, page_size=1000, page_token=token, include_suppressed=True
        )
        page = stub.ListFindings(request, timeout=TIMEOUT)
        yield from page.findings
        token = page.next_page_token
        if not token:
            return


def _glob(pattern: str) -> str:
    return "" if pattern == "*" else pattern
