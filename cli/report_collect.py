"""Reads the unified report from the running services through their contracts: posture
findings, runtime profiles and alerts, and from the correlator the verdicts, risks, incidents,
vulnerabilities and recommendations. A section a service cannot give (UNIMPLEMENTED, down) is
named in `Report.pending` with the reason. Used by `parallax report` and `parallax demo`."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from parallax.correlator.v1 import correlator_service_pb2 as co
from parallax.correlator.v1 import correlator_service_pb2_grpc as co_grpc
from parallax.correlator.v1 import evidence_pb2, recommendation_pb2, vulnerability_pb2
from parallax.policygen.v1 import readiness_pb2
from parallax.posture.v1 import posture_service_pb2 as po
from parallax.posture.v1 import posture_service_pb2_grpc as po_grpc
from parallax.runtime.v1 import profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as rt
from parallax.runtime.v1 import runtime_service_pb2_grpc as rt_grpc

from cli import report_model as m
from cli.connection import channel
from servicekit.tls import TlsMaterial

TIMEOUT = 20.0
PAGE = 1000
_READY = readiness_pb2.POLICY_READINESS_STATE_READY


def workload_name(ref: Any) -> str:
    """`namespace/Kind/name` of a WorkloadRef."""
    return f"{ref.namespace}/{ref.kind}/{ref.name}"


def severity(value: int) -> str:
    """The short name of a parallax.type.v1.Severity."""
    return m.SEVERITIES[value] if 0 <= value < len(m.SEVERITIES) else str(value)


def readiness(value: int) -> str:
    """The short name of a PolicyReadinessState."""
    name = readiness_pb2.PolicyReadinessState.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("POLICY_READINESS_STATE_")


def _pages(call: Callable[..., Any], request: Any, attribute: str) -> Iterator[Any]:
    for _ in range(100):
        reply = call(request, timeout=TIMEOUT)
        yield from getattr(reply, attribute)
        if not reply.next_page_token:
            return
        request.page_token = reply.next_page_token


def _why(exc: grpc.RpcError) -> str:
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def profile(p: profile_pb2.Profile) -> m.Profile:
    """Summarise a runtime profile."""
    state = profile_pb2.ProfileState.Name(p.state).removeprefix("PROFILE_STATE_")
    return m.Profile(
        workload=workload_name(p.workload),
        container=p.workload.container,
        state=state,
        reason=p.state_reason,
        syscalls=len(p.syscalls),
        executables=sorted({e.path for e in p.executables}),
        file_opens=len(p.file_opens),
        writes=sorted({f.path_pattern for f in p.file_opens if f.writes})[:12],
        peers=sorted(
            {f"{'in' if n.direction == 2 else 'out'} {n.address}:{n.port}" for n in p.network_peers}
        )[:12],
        capabilities=sorted({c.capability_name for c in p.capabilities if c.allowed_count}),
    )


def alert(a: Any) -> m.Alert:
    """An alert with its process tree, root first."""
    tree = [f"{p.pid} {' '.join(p.argv) or p.path}" for p in a.process_tree]
    return m.Alert(
        rule_id=a.rule_id,
        severity=severity(a.severity),
        workload=f"{workload_name(a.workload)} ({a.workload.container})",
        title=a.rule_title,
        message=a.message,
        count=a.count,
        process_tree=tree,
        evidence=dict(a.evidence),
    )


def finding(f: Any) -> m.Finding:
    """A posture finding without a verdict."""
    return m.Finding(
        control_id=f.control_id,
        severity=severity(f.severity),
        workload=workload_name(f.owner)
        if f.owner.name
        else f"{f.object.namespace}/{f.object.kind}/{f.object.object_name}",
        message=f.message,
        field_path=f.field_path,
    )


def incident(i: Any) -> m.Incident:
    """A correlator incident."""
    access = i.service_account
    sa = ""
    if access.service_account:
        sa = (
            f"{access.service_account}: token {'mounted' if access.token_mounted else 'absent'}, "
            f"power {severity(access.power)}; {', '.join(access.permissions[:4])}"
        )
    return m.Incident(
        title=i.title,
        severity=severity(i.severity),
        workload=f"{workload_name(i.alert.workload)} ({i.alert.workload.container})",
        rule_id=i.alert.rule_id,
        message=i.alert.message,
        escalation_reasons=list(i.escalation_reasons),
        attack_path=[
            s.description + (f" [{s.mitre_technique_id}]" if s.mitre_technique_id else "")
            for s in i.attack_path_steps
        ],
        findings=[f"{f.control_id} {f.message}" for f in i.findings],
        exposure=list(i.exposure.reasons),
        service_account=sa,
        contained=i.containment_reason if i.contained else "",
    )


class Collector:
    """Reads one report from the services at the given addresses (absent ones are skipped)."""

    def __init__(self, addresses: dict[str, str], tls: TlsMaterial | None) -> None:
        self.addresses, self.tls = addresses, tls
        self.report = m.Report(
            title="Parallax report",
            generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )

    def collect(self, namespace: str = "") -> m.Report:
        """Fill the report from every service that answers."""
        for name, step in (
            ("posture", self._posture),
            ("runtime", self._runtime),
            ("correlator", self._correlator),
        ):
            address = self.addresses.get(name)
            if not address:
                self.report.pending[name] = f"the {name} service is not running"
                continue
            try:
                with channel(address, self.tls, timeout=TIMEOUT) as opened:
                    step(opened, namespace)
            except grpc.RpcError as exc:
                self.report.pending[name] = _why(exc)
        return self.report

    def _posture(self, opened: grpc.Channel, namespace: str) -> None:
        stub = po_grpc.PostureServiceStub(opened)
        request = po.ListFindingsRequest(page_size=PAGE)
        found = [finding(f) for f in _pages(stub.ListFindings, request, "findings")]
        self.report.findings = [f for f in found if f.workload.startswith(namespace)]

    def _runtime(self, opened: grpc.Channel, namespace: str) -> None:
        stub = rt_grpc.RuntimeServiceStub(opened)
        request = rt.ListProfilesRequest(page_size=PAGE)
        profiles = [profile(p) for p in _pages(stub.ListProfiles, request, "profiles")]
        self.report.profiles = [p for p in profiles if p.workload.startswith(namespace)]
        alerts = _pages(stub.ListAlerts, rt.ListAlertsRequest(page_size=PAGE), "alerts")
        self.report.alerts = [
            alert(a) for a in alerts if a.workload.namespace.startswith(namespace)
        ]

    def _correlator(self, opened: grpc.Channel, namespace: str) -> None:
        stub = co_grpc.CorrelatorServiceStub(opened)
        sections: list[tuple[str, Callable[[co_grpc.CorrelatorServiceStub, str], None]]] = [
            ("risks and verdicts", self._risks),
            ("incidents", self._incidents),
            ("vulnerabilities", self._vulnerabilities),
            ("recommendations", self._recommendations),
        ]
        for section, step in sections:
            try:
                step(stub, namespace)
            except grpc.RpcError as exc:
                self.report.pending[section] = f"{m.AWAITING}: {_why(exc)}"

    def _risks(self, stub: co_grpc.CorrelatorServiceStub, namespace: str) -> None:
        request = co.ListRisksRequest(page_size=PAGE, namespace=namespace)
        verdicts: list[m.Finding] = []
        for r in _pages(stub.ListRisks, request, "risks"):
            terms = [
                m.Term(t.term, t.weight, t.value, t.contribution, t.explanation) for t in r.terms
            ]
            name = workload_name(r.workload)
            self.report.risks.append(m.Risk(name, r.score, r.rank, severity(r.severity), terms))
            context = stub.GetWorkloadContext(
                co.GetWorkloadContextRequest(workload=r.workload), timeout=TIMEOUT
            ).workload_context
            for fc in context.findings:
                judged = finding(fc.finding)
                judged.verdict = evidence_pb2.RuntimeVerdict.Name(fc.verdict).removeprefix(
                    "RUNTIME_VERDICT_"
                )
                judged.verdict_reason = fc.verdict_reason
                judged.evidence = [e.description for e in fc.evidence_items]
                verdicts.append(judged)
        if verdicts:  # the correlator's view replaces posture's bare findings
            self.report.findings = verdicts

    def _incidents(self, stub: co_grpc.CorrelatorServiceStub, namespace: str) -> None:
        request = co.ListIncidentsRequest(page_size=PAGE)
        found = [incident(i) for i in _pages(stub.ListIncidents, request, "incidents")]
        self.report.incidents = [i for i in found if i.workload.startswith(namespace)]

    def _vulnerabilities(self, stub: co_grpc.CorrelatorServiceStub, namespace: str) -> None:
        request = co.ListVulnerabilitiesRequest(page_size=PAGE)
        for v in _pages(stub.ListVulnerabilities, request, "vulnerabilities"):
            verdict = vulnerability_pb2.UsageVerdict.Name(v.usage_verdict)
            self.report.vulnerabilities.append(
                m.Vulnerability(
                    v.vulnerability_id,
                    severity(v.severity),
                    workload_name(v.workload),
                    f"{v.package_name} {v.package_version}",
                    verdict.removeprefix("USAGE_VERDICT_"),
                    v.verdict_reason,
                )
            )

    def _recommendations(self, stub: co_grpc.CorrelatorServiceStub, namespace: str) -> None:
        if self.report.policies:  # the demo's own generated and verified policies
            return
        request = co.ListRecommendationsRequest(page_size=PAGE)
        for r in _pages(stub.ListRecommendations, request, "recommendations"):
            kind = recommendation_pb2.RecommendationKind.Name(r.kind)
            self.report.policies.append(
                m.Policy(
                    workload=workload_name(r.workload),
                    kind=kind.removeprefix("RECOMMENDATION_KIND_").lower(),
                    readiness=readiness(r.readiness_state),
                    verified=None if not r.verification_summary else r.readiness_state == _READY,
                    verification=r.verification_summary,
                    details=[r.state_reason] if r.state_reason else [],
                )
            )
