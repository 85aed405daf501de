"""The PostureService gRPC servicer: parses requests, calls the scanner and store, and builds
responses. Every method is a thin translation; errors are domain errors mapped by servicekit."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc
from parallax.posture.v1 import posture_service_pb2 as pb
from parallax.posture.v1 import posture_service_pb2_grpc as pb_grpc
from parallax.type.v1 import change_pb2

from servicekit import serve
from servicekit.errors import InvalidArgument
from servicekit.pagination import page
from services.posture import rules, wire
from services.posture.history import ScanRecord
from services.posture.scans import ClusterRequest, Scanner
from services.posture.store import FindingFilter, PostureStore

SERVICE_NAME = "parallax.posture.v1.PostureService"
MAX_INLINE_BYTES = 12 * 1024 * 1024
_NONE = change_pb2.CHANGE_TYPE_UNSPECIFIED


class PostureServicer(pb_grpc.PostureServiceServicer):
    """Serves scans, findings and the control catalog."""

    def __init__(self, store: PostureStore, scanner: Scanner) -> None:
        self.store = store
        self.scanner = scanner
        self.controls = {c.id: c for c in rules.CONTROLS}

    def CreateScan(self, request: pb.CreateScanRequest, context: Any) -> pb.CreateScanResponse:
        frameworks = tuple(request.frameworks)
        suppressions = wire.suppressions(list(request.suppressions))
        if request.WhichOneof("target") == "cluster":
            target = request.cluster
            record = self.scanner.scan_cluster(
                ClusterRequest(
                    target.kubeconfig_context,
                    target.in_cluster,
                    target.cluster_name,
                    tuple(target.namespaces),
                ),
                frameworks=frameworks,
                suppressions=suppressions,
                wait=request.wait_for_completion,
            )
        else:
            documents = _documents(request)
            record = self.scanner.scan_manifests(
                documents,
                frameworks=frameworks,
                suppressions=suppressions,
                wait=request.wait_for_completion,
            )
        return pb.CreateScanResponse(scan=wire.scan(record))

    def GetScan(self, request: pb.GetScanRequest, context: Any) -> pb.GetScanResponse:
        return pb.GetScanResponse(scan=wire.scan(self.store.get_scan(_scan_id(request.name))))

    def ListScans(self, request: pb.ListScansRequest, context: Any) -> pb.ListScansResponse:
        state = wire.scan_state_from_wire(request.state)
        where = page(request.page_size, request.page_token, request.source_key, request.state)
        records, more = self.store.list_scans(where.offset, where.size, request.source_key, state)
        return pb.ListScansResponse(
            scans=[wire.scan(r) for r in records],
            next_page_token=where.next_token(len(records), more),
        )

    def ListFindings(
        self, request: pb.ListFindingsRequest, context: Any
    ) -> pb.ListFindingsResponse:
        where = self._finding_filter(request)
        paging = page(request.page_size, request.page_token, where, request.framework)
        found, more, total = self.store.list_findings(where, paging.offset, paging.size)
        return pb.ListFindingsResponse(
            findings=[wire.finding(f, self.controls) for f in found],
            next_page_token=paging.next_token(len(found), more),
            total_size=total,
        )

    def ListControls(
        self, request: pb.ListControlsRequest, context: Any
    ) -> pb.ListControlsResponse:
        paging = page(request.page_size, request.page_token, request.framework)
        selected = rules.select_controls([request.framework] if request.framework else [])
        chunk = selected[paging.offset : paging.offset + paging.size]
        return pb.ListControlsResponse(
            controls=[wire.control(c) for c in chunk],
            next_page_token=paging.next_token(
                len(chunk), paging.offset + len(chunk) < len(selected)
            ),
        )

    def WatchFindings(
        self, request: pb.WatchFindingsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchFindingsResponse]:
        finished: queue.Queue[ScanRecord | None] = queue.Queue()
        unsubscribe = self.scanner.subscribe(finished.put)
        context.add_callback(lambda: finished.put(None))
        try:
            latest = self.store.latest_finished(request.source_key)
            if latest is not None:
                yield from self._changes(request, latest, current=True)
            yield pb.WatchFindingsResponse(change_type=change_pb2.CHANGE_TYPE_SYNCED)
            while (record := finished.get()) is not None:
                if not request.source_key or record.source_key == request.source_key:
                    yield from self._changes(request, record, current=False)
        finally:
            unsubscribe()

    def _changes(
        self, request: pb.WatchFindingsRequest, record: ScanRecord, *, current: bool
    ) -> Iterator[pb.WatchFindingsResponse]:
        where = FindingFilter(
            scan_id=record.id,
            namespace=request.workload.namespace,
            kind=request.workload.kind,
            name=request.workload.name,
            minimum_severity=wire.severity_from_wire(request.minimum_severity),
            include_suppressed=request.include_suppressed,
            include_fixed=not current,
        )
        offset = 0
        while True:
            found, more, _ = self.store.list_findings(where, offset, 500)
            for stored in found:
                change = _change_type(stored.state.value, current)
                if change:
                    yield pb.WatchFindingsResponse(
                        change_type=change,
                        finding=wire.finding(stored, self.controls),
                        scan=record.name,
                    )
            if not more:
                return
            offset += len(found)

    def _finding_filter(self, request: pb.ListFindingsRequest) -> FindingFilter:
        controls = tuple(request.control_ids)
        if request.framework:
            in_framework = {c.id for c in rules.select_controls([request.framework])}
            if not in_framework:
                raise InvalidArgument(f"unknown framework {request.framework!r}")
            controls = (
                tuple(sorted(in_framework & set(controls)))
                if controls
                else tuple(sorted(in_framework))
            )
        return FindingFilter(
            scan_id=_scan_id(request.scan) if request.scan else "",
            namespace=request.workload.namespace,
            kind=request.workload.kind,
            name=request.workload.name,
            control_ids=controls,
            minimum_severity=wire.severity_from_wire(request.minimum_severity),
            include_suppressed=request.include_suppressed,
            include_fixed=request.include_fixed,
        )


def registration(servicer: PostureServicer) -> serve.Registration:
    """Mount `servicer` as parallax.posture.v1.PostureService."""
    return serve.Registration(
        SERVICE_NAME, lambda server: pb_grpc.add_PostureServiceServicer_to_server(servicer, server)
    )


def _change_type(state: str, current: bool) -> change_pb2.ChangeType.ValueType:
    if current:
        return change_pb2.CHANGE_TYPE_CURRENT if state != "fixed" else _NONE
    changes = {"new": change_pb2.CHANGE_TYPE_ADDED, "fixed": change_pb2.CHANGE_TYPE_REMOVED}
    return changes.get(state, _NONE)


def _documents(request: pb.CreateScanRequest) -> list[tuple[str, bytes]]:
    manifests = list(request.manifests.manifests)
    if not manifests:
        raise InvalidArgument("CreateScan needs manifests (inline files) or a cluster target")
    total = sum(len(m.content) for m in manifests)
    if total > MAX_INLINE_BYTES:
        raise InvalidArgument(
            f"inline manifests total {total} bytes; the limit is {MAX_INLINE_BYTES}"
        )
    return [(m.uri or f"inline-{i}", bytes(m.content)) for i, m in enumerate(manifests)]


def _scan_id(name: str) -> str:
    prefix, _, scan_id = name.partition("/")
    if prefix != "scans" or not scan_id or "/" in scan_id:
        raise InvalidArgument(f"scan name must look like scans/{{id}}, got {name!r}")
    return scan_id
