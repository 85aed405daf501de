"""One correlation pass: fetch findings, profiles and alerts through the upstream contracts,
group them by workload and compute verdicts, exposure, service-account power, risk and
incidents. Each pass is one domain span. Used by the servicer and the feedback loop."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from parallax.posture.v1 import finding_pb2
from parallax.runtime.v1 import alert_pb2, profile_pb2

from services.correlator import context, incidents, manifests, mounts, risk, verdicts, wire
from services.correlator import recommendations as rec
from services.correlator.domain import Finding, FindingVerdict, Mount, Severity, Workload
from services.correlator.store import CorrelatorStore
from services.correlator.upstream import Upstreams
from services.correlator.vulns import Usage

tracer = trace.get_tracer("parallax.correlator")


@dataclass
class Snapshot:
    """Upstream facts of one pass, by workload; messages kept for responses."""

    findings: dict[Workload, list[finding_pb2.Finding]] = field(default_factory=dict)
    profiles: dict[Workload, list[profile_pb2.Profile]] = field(default_factory=dict)
    alerts: dict[Workload, list[alert_pb2.Alert]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def workloads(self) -> list[Workload]:
        """Every workload posture or runtime knows, sorted."""
        return sorted({*self.findings, *self.profiles})


@dataclass(frozen=True)
class Facts:
    """Domain facts of one workload with its verdicts, exposure, access and score."""

    workload: Workload
    findings: tuple[Finding, ...]
    mounts: tuple[Mount, ...]
    verdicts: tuple[FindingVerdict, ...]
    exposure: context.Exposure
    access: context.Access
    risk: risk.Risk


class Correlator:
    """Joins posture, runtime and the correlator's own store."""

    def __init__(
        self, upstreams: Upstreams, store: CorrelatorStore, files: manifests.Manifests
    ) -> None:
        self.upstreams = upstreams
        self.store = store
        self.files = files

    def snapshot(self, workload: Workload | None = None) -> Snapshot:
        """Fetch findings, current profiles and alerts (for one workload, or all)."""
        with tracer.start_as_current_span("correlator.snapshot"):
            ref = wire.ref(workload) if workload else None
            snap = Snapshot()
            found = self.upstreams.findings(ref)
            for m in found:
                snap.findings.setdefault(wire.workload_of(m.owner), []).append(m)
            for p in self.upstreams.profiles(ref):
                snap.profiles.setdefault(wire.workload_of(p.workload), []).append(p)
            for a in self.upstreams.alerts(ref):
                snap.alerts.setdefault(wire.workload_of(a.workload), []).append(a)
            snap.files = self.files.read(m.object.location.uri for m in found)
            return snap

    def facts(self, snap: Snapshot, workload: Workload) -> Facts:
        """Verdicts, exposure, access and risk of one workload."""
        findings = [wire.finding(m) for m in snap.findings.get(workload, [])]
        findings = [f for f in findings if f.workload == workload]
        profiles = [wire.profile(p) for p in snap.profiles.get(workload, [])]
        docs = manifests.documents(snap.files)
        manifest = manifests.workload_manifest(findings, docs, workload)
        found_mounts = mounts.mounts(manifest) if manifest else ()
        closing = closer(self.store.recommendations(workload.namespace, int(rec.State.CURRENT)))
        judged = verdicts.judge_all(findings, profiles, found_mounts, closing)
        exposure = context.exposure(findings, profiles)
        access = context.access(findings, profiles, workload.namespace)
        alerts = [wire.alert(a) for a in snap.alerts.get(workload, [])]
        in_use = [
            Severity(r.severity)
            for r in self.store.vulnerabilities(workload.namespace)
            if r.workload == workload and r.flag == Usage.IN_USE
        ]
        scored = risk.score(
            workload,
            verdicts=judged,
            exposure=exposure,
            access=access,
            alerts=alerts,
            in_use=in_use,
        )
        return Facts(
            workload, tuple(findings), found_mounts, tuple(judged), exposure, access, scored
        )

    def ranking(self, namespace: str = "") -> list[Facts]:
        """Every workload's facts, highest score first."""
        with tracer.start_as_current_span("correlator.rank"):
            snap = self.snapshot()
            chosen = [w for w in snap.workloads() if not namespace or w.namespace == namespace]
            ranked = [self.facts(snap, w) for w in chosen]
            ranked.sort(key=lambda f: (-f.risk.score, f.workload))
            return ranked

    def incident(
        self, snap: Snapshot, message: alert_pb2.Alert
    ) -> tuple[incidents.Incident, Facts]:
        """The incident of one alert, with its workload's facts."""
        workload = wire.workload_of(message.workload)
        facts = self.facts(snap, workload)
        built = incidents.build(
            wire.alert(message),
            findings=facts.findings,
            mounts=facts.mounts,
            exposure=facts.exposure,
            access=facts.access,
            scanned=workload in snap.findings,
        )
        return built, facts


def closer(current: Sequence[rec.Recommendation]) -> verdicts.Closing:
    """Name the recommendation that would close a finding (hardening first)."""
    by_finding: dict[str, list[rec.Recommendation]] = defaultdict(list)
    for r in current:
        for name in r.closes_findings:
            by_finding[name].append(r)

    def closing(finding: Finding) -> str:
        options = sorted(by_finding.get(finding.name, []), key=lambda r: -int(r.kind))
        return options[0].name if options else ""

    return closing
