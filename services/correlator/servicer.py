"""The CorrelatorService servicer: each RPC parses its request, asks the correlation pass, the
feed or the store, and builds the response; pagination by servicekit.pagination, domain errors
mapped to canonical codes by servicekit's interceptor."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import grpc
from parallax.correlator.v1 import correlator_service_pb2 as pb
from parallax.correlator.v1 import correlator_service_pb2_grpc as pb_grpc
from parallax.correlator.v1 import vulnerability_pb2 as vpb
from parallax.type.v1 import change_pb2

from servicekit import serve
from servicekit.errors import InvalidArgument, NotFound
from servicekit.pagination import page
from services.correlator import filters, render, wire
from services.correlator.correlate import Correlator
from services.correlator.feed import Feed, with_times
from services.correlator.reports import ReportFormat
from services.correlator.vulns import VexStatement, openvex

SERVICE_NAME = "parallax.correlator.v1.CorrelatorService"
T = TypeVar("T")


def _slice(items: Sequence[T], request: Any, *keys: object) -> tuple[Sequence[T], str]:
    where = page(request.page_size, request.page_token, *keys)
    chunk = items[where.offset : where.offset + where.size]
    return chunk, where.next_token(len(chunk), where.offset + len(chunk) < len(items))


class CorrelatorServicer(pb_grpc.CorrelatorServiceServicer):
    """Serves risks, contexts, incidents, vulnerabilities and recommendations."""

    def __init__(self, correlator: Correlator, feed: Feed, clock: Callable[[], float]) -> None:
        self.correlator, self.feed, self.clock = correlator, feed, clock
        self.store = correlator.store

    def ListRisks(self, request: pb.ListRisksRequest, context: Any) -> pb.ListRisksResponse:
        page(request.page_size, request.page_token, request.namespace, request.minimum_score)
        ranked = [(i + 1, f) for i, f in enumerate(self.correlator.ranking())]
        chosen = [
            wire.risk(f.risk, rank, self.clock())
            for rank, f in ranked
            if (not request.namespace or f.workload.namespace == request.namespace)
            and f.risk.score >= request.minimum_score
        ]
        chunk, token = _slice(chosen, request, request.namespace, request.minimum_score)
        return pb.ListRisksResponse(risks=chunk, next_page_token=token)

    def GetWorkloadContext(
        self, request: pb.GetWorkloadContextRequest, context: Any
    ) -> pb.GetWorkloadContextResponse:
        workload = filters.required_workload(request.workload)
        snap = self.correlator.snapshot(workload)
        if workload not in snap.findings and workload not in snap.profiles:
            raise NotFound(f"neither posture nor runtime knows workload {workload.key}")
        facts = self.correlator.facts(snap, workload)
        ranked = [f.workload for f in self.correlator.ranking()]
        rank = ranked.index(workload) + 1 if workload in ranked else 0
        mine = filters.same_workload(workload)
        namespace = workload.namespace
        built = render.context(
            facts,
            findings=snap.findings.get(workload, []),
            profiles=snap.profiles.get(workload, []),
            recommendations=[r for r in self.store.recommendations(namespace) if mine(r.workload)],
            incidents=[r for r in self.store.incidents(namespace) if mine(r.workload)],
            vulnerabilities=[r for r in self.store.vulnerabilities(namespace) if mine(r.workload)],
            rank=rank,
            now=self.clock(),
        )
        return pb.GetWorkloadContextResponse(workload_context=built)

    def ListIncidents(
        self, request: pb.ListIncidentsRequest, context: Any
    ) -> pb.ListIncidentsResponse:
        keys = (
            filters.key(request.workload),
            request.minimum_severity,
            request.exclude_contained,
            request.include_resolved,
        )
        page(request.page_size, request.page_token, *keys)
        rows = self.store.incidents(request.workload.namespace, request.include_resolved)
        chosen = [
            with_times(r.payload, r)
            for r in rows
            if filters.incident_matches(r, request.workload, request.minimum_severity)
            and not (request.exclude_contained and r.flag)
        ]
        chunk, token = _slice(chosen, request, *keys)
        return pb.ListIncidentsResponse(incidents=chunk, next_page_token=token)

    def WatchIncidents(
        self, request: pb.WatchIncidentsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchIncidentsResponse]:
        changes: queue.Queue[tuple[int, Any] | None] = queue.Queue()
        unsubscribe = self.feed.subscribe(lambda kind, message: changes.put((kind, message)))
        context.add_callback(lambda: changes.put(None))
        try:
            for row in self.store.incidents(request.workload.namespace):
                if filters.incident_matches(row, request.workload, request.minimum_severity):
                    incident = with_times(row.payload, row)
                    yield pb.WatchIncidentsResponse(
                        change_type=change_pb2.CHANGE_TYPE_CURRENT, incident=incident
                    )
            yield pb.WatchIncidentsResponse(change_type=change_pb2.CHANGE_TYPE_SYNCED)
            while (change := changes.get()) is not None:
                kind, incident = change
                if filters.incident_message_matches(incident, request):
                    yield pb.WatchIncidentsResponse(change_type=cast(Any, kind), incident=incident)
        finally:
            unsubscribe()

    def ImportVulnerabilityReport(
        self, request: pb.ImportVulnerabilityReportRequest, context: Any
    ) -> pb.ImportVulnerabilityReportResponse:
        if request.format not in {f.value for f in ReportFormat}:
            raise InvalidArgument("format must be TRIVY_JSON, GRYPE_JSON or CYCLONEDX_JSON")
        if not request.image_ref:
            raise InvalidArgument("image_ref is required")
        stored = self.feed.import_report(
            ReportFormat(request.format), request.image_ref, request.image_digest, request.content
        )
        report = vpb.VulnerabilityReport(
            name=f"vulnerabilityReports/{stored.id}",
            image_ref=stored.image_ref,
            image_digest=stored.image_digest,
            format=stored.format,  # type: ignore[arg-type]
            package_count=stored.package_count,
            vulnerability_count=stored.vulnerability_count,
            package_files_present=stored.files_present,
        )
        report.import_time.FromDatetime(stored.import_time)
        return pb.ImportVulnerabilityReportResponse(vulnerability_report=report)

    def ListVulnerabilities(
        self, request: pb.ListVulnerabilitiesRequest, context: Any
    ) -> pb.ListVulnerabilitiesResponse:
        keys = (
            filters.key(request.workload),
            request.image_ref,
            request.usage_verdict,
            request.minimum_severity,
        )
        page(request.page_size, request.page_token, *keys)
        rows = self.store.vulnerabilities(request.workload.namespace, request.image_ref)
        chosen = [
            vpb.Vulnerability.FromString(r.payload)
            for r in rows
            if filters.row_matches(r, request.workload, request.minimum_severity)
            and (not request.usage_verdict or r.flag == request.usage_verdict)
        ]
        chunk, token = _slice(chosen, request, *keys)
        return pb.ListVulnerabilitiesResponse(vulnerabilities=chunk, next_page_token=token)

    def ExportVex(self, request: pb.ExportVexRequest, context: Any) -> pb.ExportVexResponse:
        rows = self.store.vulnerabilities(request.workload.namespace, request.image_ref)
        statements = []
        for row in rows:
            if row.flag == 2 and filters.row_matches(row, request.workload, 0):
                v = vpb.Vulnerability.FromString(row.payload)
                statements.append(
                    VexStatement(
                        v.vulnerability_id,
                        tuple(v.aliases),
                        v.image_ref,
                        v.image_digest,
                        v.package_purl,
                        v.verdict_reason,
                    )
                )
        now = datetime.fromtimestamp(self.clock(), UTC)
        return pb.ExportVexResponse(openvex_json=openvex(statements, request.author, now))

    def ListRecommendations(
        self, request: pb.ListRecommendationsRequest, context: Any
    ) -> pb.ListRecommendationsResponse:
        keys = (filters.key(request.workload), request.kind, request.state)
        page(request.page_size, request.page_token, *keys)
        found = self.store.recommendations(request.workload.namespace, request.state)
        chosen = [
            render.recommendation(r)
            for r in found
            if filters.ref_matches(request.workload, r.workload, r.container)
            and (not request.kind or int(r.kind) == request.kind)
        ]
        chunk, token = _slice(chosen, request, *keys)
        return pb.ListRecommendationsResponse(recommendations=chunk, next_page_token=token)


def registration(servicer: CorrelatorServicer) -> serve.Registration:
    """Mount `servicer` as parallax.correlator.v1.CorrelatorService."""
    return serve.Registration(
        SERVICE_NAME,
        lambda server: pb_grpc.add_CorrelatorServiceServicer_to_server(servicer, server),
    )
