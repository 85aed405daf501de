"""Translation between the correlator's domain and protobuf messages: posture findings, runtime
profiles and alerts in; verdicts, risks, exposure, incidents and recommendations out. Used by the
correlation pass, the loop and the servicer."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.correlator.v1 import context_pb2, evidence_pb2, exposure_pb2, incident_pb2, risk_pb2
from parallax.posture.v1 import finding_pb2
from parallax.runtime.v1 import alert_pb2, event_pb2, profile_pb2
from parallax.type.v1 import workload_pb2

from services.correlator import domain as d
from services.correlator.context import Access, Exposure
from services.correlator.incidents import Incident
from services.correlator.risk import Risk


def seconds(stamp: Timestamp) -> float:
    """A Timestamp as float seconds (0 when unset)."""
    return float(stamp.seconds) + stamp.nanos / 1e9


def stamp(value: float) -> Timestamp | None:
    """Float seconds as a Timestamp; None for 0."""
    if not value:
        return None
    out = Timestamp()
    out.FromNanoseconds(int(value * 1e9))
    return out


def workload_of(ref: workload_pb2.WorkloadRef) -> d.Workload:
    """The workload part of a WorkloadRef."""
    return d.Workload(ref.namespace, ref.kind, ref.name)


def ref(workload: d.Workload, container: str = "") -> workload_pb2.WorkloadRef:
    """A WorkloadRef for a workload (and container)."""
    return workload_pb2.WorkloadRef(
        namespace=workload.namespace, kind=workload.kind, name=workload.name, container=container
    )


def finding(m: finding_pb2.Finding) -> d.Finding:
    """A posture finding."""
    return d.Finding(
        name=m.name,
        control_id=m.control_id,
        title=m.control_title,
        severity=d.Severity(m.severity),
        workload=workload_of(m.owner),
        field_path=m.field_path,
        message=m.message,
        uri=m.object.location.uri,
        document=m.object.location.document_index,
        details=tuple(sorted(m.details.items())),
        fingerprint=m.fingerprint,
    )


def profile(m: profile_pb2.Profile) -> d.Profile:
    """A runtime profile."""
    return d.Profile(
        name=m.name,
        workload=workload_of(m.workload),
        container=m.workload.container,
        image=m.image,
        digest=m.image_digest,
        state=d.ProfileState(m.state),
        state_reason=m.state_reason,
        capabilities=tuple(
            d.Capability(
                c.capability_name, c.allowed_count, c.denied_count, seconds(c.first_seen_time)
            )
            for c in m.capabilities
        ),
        user_ids=tuple(
            d.UserId(u.uid, u.euid, tuple(u.executables), seconds(u.first_seen_time))
            for u in m.user_ids
        ),
        file_opens=tuple(
            d.FileOpen(f.path_pattern, f.writes, tuple(f.executables), seconds(f.first_seen_time))
            for f in m.file_opens
        ),
        peers=tuple(
            d.Peer(
                p.address,
                p.port,
                p.direction == event_pb2.FLOW_DIRECTION_ACCEPT,
                tuple(p.dns_names),
                seconds(p.first_seen_time),
            )
            for p in m.network_peers
        ),
        executables=tuple(
            d.Executable(e.path, tuple(e.argv), tuple(e.parent_paths), seconds(e.first_seen_time))
            for e in m.executables
        ),
        syscalls=tuple(s.syscall_name for s in m.syscalls),
        complete_time=seconds(m.complete_time),
    )


def alert(m: alert_pb2.Alert) -> d.Alert:
    """A runtime alert."""
    return d.Alert(
        name=m.name,
        rule_id=m.rule_id,
        title=m.rule_title,
        severity=d.Severity(m.severity),
        message=m.message,
        workload=workload_of(m.workload),
        container=m.workload.container,
        evidence=tuple(sorted(m.evidence.items())),
        process_paths=tuple(p.path for p in m.process_tree),
        resolved=m.state == alert_pb2.ALERT_STATE_RESOLVED,
        mitre=m.mitre_technique_id,
        last_seen=seconds(m.last_seen_time),
    )


def evidence(item: d.Evidence) -> evidence_pb2.EvidenceItem:
    """An evidence item."""
    return evidence_pb2.EvidenceItem(
        description=item.description, source=item.source, observe_time=stamp(item.observed)
    )


def finding_context(v: d.FindingVerdict, m: finding_pb2.Finding) -> context_pb2.FindingContext:
    """A finding with its verdict."""
    return context_pb2.FindingContext(
        finding=m,
        verdict=int(v.verdict),  # type: ignore[arg-type]
        verdict_reason=v.reason,
        evidence_items=[evidence(e) for e in v.evidence],
        recommendation=v.recommendation,
    )


def exposure(e: Exposure) -> exposure_pb2.Exposure:
    """Exposure."""
    return exposure_pb2.Exposure(exposed=e.exposed, reasons=list(e.reasons))


def access(a: Access) -> exposure_pb2.ServiceAccountAccess:
    """Service-account access."""
    return exposure_pb2.ServiceAccountAccess(
        service_account=a.service_account,
        token_mounted=a.token_mounted,
        token_read=a.token_read,
        cluster_admin=a.cluster_admin,
        power=int(a.power),  # type: ignore[arg-type]
        permissions=list(a.permissions),
    )


def risk(r: Risk, rank: int, now: float) -> risk_pb2.Risk:
    """A risk score with its terms."""
    return risk_pb2.Risk(
        name=f"workloads/{r.workload.key}/risk",
        workload=ref(r.workload),
        score=r.score,
        rank=rank,
        severity=int(r.severity),  # type: ignore[arg-type]
        terms=[
            risk_pb2.ScoreTerm(
                term=t.term,
                weight=t.weight,
                value=t.value,
                contribution=t.contribution,
                explanation=t.explanation,
            )
            for t in r.terms
        ],
        update_time=stamp(now),
    )


def incident(
    i: Incident,
    m: alert_pb2.Alert,
    findings: dict[str, finding_pb2.Finding],
    exposed: Exposure,
    account: Access,
) -> incident_pb2.Incident:
    """An incident (times are set by the store)."""
    return incident_pb2.Incident(
        name=i.name,
        alert=m,
        severity=int(i.severity),  # type: ignore[arg-type]
        title=i.title,
        escalation_reasons=list(i.reasons),
        attack_path_steps=[
            incident_pb2.AttackPathStep(
                description=s.description, mitre_technique_id=s.mitre, findings=list(s.findings)
            )
            for s in i.steps
        ],
        findings=[findings[f.name] for f in i.findings if f.name in findings],
        exposure=exposure(exposed),
        service_account=access(account),
        contained=i.contained,
        containment_reason=i.containment,
    )
