"""Incidents and in-use vulnerability verdicts kept current from each snapshot: every runtime
alert becomes a stored incident (watchers hear ADDED, UPDATED or REMOVED), and every imported
report is judged against the profiles of the containers running its image. Called by the loop
and by ImportVulnerabilityReport."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

from parallax.correlator.v1 import incident_pb2
from parallax.correlator.v1 import vulnerability_pb2 as vpb
from parallax.type.v1 import change_pb2

from services.correlator import reports, vulns, wire
from services.correlator.correlate import Correlator, Snapshot
from services.correlator.domain import Profile, Severity, Workload
from services.correlator.store import CorrelatorStore, Row, StoredReport

Listener = Callable[[int, incident_pb2.Incident], None]


def with_times(payload: bytes, row: Row) -> incident_pb2.Incident:
    """The stored incident with its create and update times."""
    message = incident_pb2.Incident.FromString(payload)
    if row.create_time and row.update_time:
        message.create_time.FromDatetime(row.create_time)
        message.update_time.FromDatetime(row.update_time)
    return message


class Feed:
    """Incidents with their watchers, and vulnerability verdicts."""

    def __init__(self, correlator: Correlator, clock: Callable[[], float]) -> None:
        self.correlator = correlator
        self.store: CorrelatorStore = correlator.store
        self.clock = clock
        self.listeners: list[Listener] = []
        self.lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear incident changes; returns the unsubscribe function."""
        with self.lock:
            self.listeners.append(listener)
        return lambda: self._drop(listener)

    def _drop(self, listener: Listener) -> None:
        with self.lock:
            if listener in self.listeners:
                self.listeners.remove(listener)

    def refresh(self, snap: Snapshot) -> None:
        """Recompute incidents and vulnerability verdicts from a snapshot."""
        self._incidents(snap)
        for report in self.store.reports():
            self.judge(report, snap)

    def _incidents(self, snap: Snapshot) -> None:
        for workload, messages in sorted(snap.alerts.items()):
            by_name = {m.name: m for m in snap.findings.get(workload, [])}
            for message in messages:
                built, facts = self.correlator.incident(snap, message)
                proto = wire.incident(built, message, by_name, facts.exposure, facts.access)
                row = Row(
                    built.name.rsplit("/", 1)[-1],
                    workload,
                    built.alert.container,
                    int(built.severity),
                    int(built.contained),
                    proto.SerializeToString(),
                )
                created, changed = self.store.put_incident(row, built.alert.resolved, self.clock())
                if changed:
                    kind = (
                        change_pb2.CHANGE_TYPE_REMOVED
                        if built.alert.resolved
                        else change_pb2.CHANGE_TYPE_ADDED
                        if created
                        else change_pb2.CHANGE_TYPE_UPDATED
                    )
                    self._publish(kind, row)

    def _publish(self, kind: int, row: Row) -> None:
        stored = [r for r in self.store.incidents(row.workload.namespace, True) if r.id == row.id]
        message = with_times(row.payload, stored[0] if stored else row)
        with self.lock:
            listeners = list(self.listeners)
        for listener in listeners:
            listener(kind, message)

    def import_report(
        self, form: reports.ReportFormat, image_ref: str, digest: str, content: bytes
    ) -> StoredReport:
        """Parse, store and judge a report against the current profiles."""
        parsed = reports.parse(form, content)
        stored = StoredReport(
            id=uuid.uuid4().hex[:16],
            image_ref=image_ref,
            image_digest=digest or parsed.digest,
            format=int(form),
            import_time=datetime.fromtimestamp(self.clock(), UTC),
            package_count=len(parsed.packages),
            vulnerability_count=len(parsed.findings),
            files_present=parsed.files_present,
            parsed=json.dumps(
                {
                    "packages": [asdict(p) for p in parsed.packages.values()],
                    "findings": [asdict(f) for f in parsed.findings],
                }
            ),
        )
        self.store.put_report(stored)
        self.judge(stored, self.correlator.snapshot())
        return stored

    def judge(self, report: StoredReport, snap: Snapshot) -> None:
        """Replace the report's verdict rows: one per (finding, container running the image)."""
        data = json.loads(report.parsed)
        packages = {
            p["key"]: reports.Package(**{**p, "files": tuple(p["files"])}) for p in data["packages"]
        }
        profiles: list[Profile | None] = [
            wire.profile(p)
            for found in snap.profiles.values()
            for p in found
            if vulns.image_matches(wire.profile(p), report.image_ref, report.image_digest)
        ]
        rows = []
        for item in data["findings"]:
            finding = reports.Finding(
                **{
                    **item,
                    "severity": Severity(item["severity"]),
                    "aliases": tuple(item["aliases"]),
                }
            )
            package = packages[finding.package]
            for profile in [*profiles] or [None]:
                verdict = vulns.usage(package, profile)
                workload = profile.workload if profile else Workload("", "", "")
                container = profile.container if profile else ""
                ident = hashlib.sha256(
                    f"{report.id}/{finding.vulnerability_id}/{package.key}/{workload.key}/"
                    f"{container}".encode()
                ).hexdigest()[:16]
                message = vpb.Vulnerability(
                    name=f"vulnerabilities/{ident}",
                    vulnerability_id=finding.vulnerability_id,
                    aliases=list(finding.aliases),
                    title=finding.title,
                    severity=cast(Any, int(finding.severity)),
                    package_name=package.name,
                    package_version=package.version,
                    package_purl=package.purl,
                    fixed_version=finding.fixed_version,
                    image_ref=report.image_ref,
                    image_digest=report.image_digest,
                    workload=wire.ref(workload, container) if profile else None,
                    usage_verdict=cast(Any, verdict.usage),
                    verdict_reason=verdict.reason,
                    evidence_items=[wire.evidence(e) for e in verdict.evidence],
                    report=f"vulnerabilityReports/{report.id}",
                )
                rows.append(
                    Row(
                        ident,
                        workload,
                        container,
                        int(finding.severity),
                        verdict.usage,
                        message.SerializeToString(),
                    )
                )
        self.store.replace_vulnerabilities(report.id, rows)
