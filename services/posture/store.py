"""Persistence of posture scans and their findings (SQLite or PostgreSQL through SQLModel). The
only module of the service that touches SQL; it returns domain records and raises NotFound."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import func, insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from servicekit.errors import NotFound
from servicekit.storage import create_tables
from services.posture.domain import (
    Finding,
    ObjectRef,
    ScanError,
    ScanReport,
    Severity,
    SourceLocation,
    Suppression,
    severity_counts,
)
from services.posture.history import (
    HistoryState,
    ScanRecord,
    ScanState,
    StoredFinding,
    diff,
    finding_id,
)


class _ScanRow(SQLModel, table=True):
    __tablename__ = "posture_scans"
    id: str = Field(primary_key=True)
    source_key: str = Field(index=True)
    description: str
    state: str = Field(index=True)
    create_time: datetime = Field(index=True)
    complete_time: datetime | None = None
    previous_scan: str = ""
    frameworks: str = "[]"
    objects_scanned: int = 0
    severity_counts: str = "{}"
    suppressed_count: int = 0
    new_count: int = 0
    fixed_count: int = 0
    errors: str = "[]"
    failure_message: str = ""


class _FindingRow(SQLModel, table=True):
    __tablename__ = "posture_findings"
    scan_id: str = Field(primary_key=True)
    id: str = Field(primary_key=True)
    state: str
    control_id: str = Field(index=True)
    severity: int
    uri: str
    document: int
    line: int
    api_version: str
    kind: str
    namespace: str = Field(index=True)
    name: str
    field_path: str
    message: str
    patch: str = "[]"
    suppression_reason: str | None = None
    suppression_origin: str | None = None
    first_seen_time: datetime


@dataclass(frozen=True)
class FindingFilter:
    """Which findings a listing returns; an empty scan id means the latest finished scan."""

    scan_id: str = ""
    namespace: str = ""
    kind: str = ""
    name: str = ""
    control_ids: tuple[str, ...] = ()
    minimum_severity: Severity = Severity.LOW
    include_suppressed: bool = False
    include_fixed: bool = False


_FINISHED = (ScanState.SUCCEEDED.value, ScanState.PARTIAL.value)


class PostureStore:
    """Scans and findings in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, [_ScanRow, _FindingRow])

    def create_scan(self, record: ScanRecord) -> None:
        """Store a new scan in state RUNNING."""
        with Session(self.engine) as session:
            session.add(_scan_row(record))
            session.commit()

    def get_scan(self, scan_id: str) -> ScanRecord:
        """Return the scan `scan_id`, or raise NotFound."""
        with Session(self.engine) as session:
            row = session.get(_ScanRow, scan_id)
            if row is None:
                raise NotFound(f"scan scans/{scan_id} does not exist")
            return _scan_record(row)

    def complete_scan(self, scan_id: str, report: ScanReport, now: datetime) -> ScanRecord:
        """Store a finished scan's findings with their history against the previous scan."""
        with Session(self.engine) as session:
            row = session.get(_ScanRow, scan_id)
            if row is None:
                raise NotFound(f"scan scans/{scan_id} does not exist")
            previous = self._previous(session, row)
            before = self._findings(session, previous.id) if previous else []
            changes = diff(report.findings, before, now)
            rows = [_finding_row(scan_id, f, s, t) for f, s, t in changes.current]
            rows += [_finding_row(scan_id, f, HistoryState.FIXED, t) for f, t in changes.fixed]
            if rows:
                session.execute(insert(_FindingRow), rows)
            by_severity, suppressed = severity_counts(report.findings)
            record = replace(
                _scan_record(row),
                state=ScanState.PARTIAL if report.errors else ScanState.SUCCEEDED,
                complete_time=now,
                previous_scan=previous.id if previous else "",
                objects_scanned=report.objects_scanned,
                severity_counts=by_severity,
                suppressed_count=suppressed,
                new_count=sum(1 for _, s, _ in changes.current if s is HistoryState.NEW),
                fixed_count=len(changes.fixed),
                errors=report.errors,
            )
            session.merge(_scan_row(record))
            session.commit()
            return record

    def fail_scan(self, scan_id: str, message: str, now: datetime) -> ScanRecord:
        """Mark a scan FAILED with the reason."""
        record = replace(
            self.get_scan(scan_id),
            state=ScanState.FAILED,
            complete_time=now,
            failure_message=message,
        )
        with Session(self.engine) as session:
            session.merge(_scan_row(record))
            session.commit()
        return record

    def list_scans(
        self, offset: int, limit: int, source_key: str = "", state: ScanState | None = None
    ) -> tuple[list[ScanRecord], bool]:
        """Return scans newest first, and whether more follow."""
        query = select(_ScanRow)
        if source_key:
            query = query.where(_ScanRow.source_key == source_key)
        if state is not None:
            query = query.where(_ScanRow.state == state.value)
        query = query.order_by(col(_ScanRow.create_time).desc(), col(_ScanRow.id).desc())
        with Session(self.engine) as session:
            rows = session.exec(query.offset(offset).limit(limit + 1)).all()
        return [_scan_record(r) for r in rows[:limit]], len(rows) > limit

    def latest_finished(self, source_key: str = "") -> ScanRecord | None:
        """Return the newest finished scan (of `source_key` when given), if any."""
        query = select(_ScanRow).where(col(_ScanRow.state).in_(_FINISHED))
        if source_key:
            query = query.where(_ScanRow.source_key == source_key)
        query = query.order_by(col(_ScanRow.complete_time).desc(), col(_ScanRow.id).desc())
        with Session(self.engine) as session:
            row = session.exec(query.limit(1)).first()
        return _scan_record(row) if row else None

    def list_findings(
        self, where: FindingFilter, offset: int, limit: int
    ) -> tuple[list[StoredFinding], bool, int]:
        """Return matching findings (most severe first), whether more follow, and the total."""
        scan_id = where.scan_id
        if not scan_id:
            latest = self.latest_finished()
            if latest is None:
                return [], False, 0
            scan_id = latest.id
        else:
            self.get_scan(scan_id)
        query = _filtered(select(_FindingRow), where, scan_id)
        total_query = _filtered(select(func.count()).select_from(_FindingRow), where, scan_id)
        query = query.order_by(
            col(_FindingRow.severity).desc(),
            _FindingRow.control_id,
            _FindingRow.uri,
            _FindingRow.id,
        )
        with Session(self.engine) as session:
            rows = session.exec(query.offset(offset).limit(limit + 1)).all()
            total = session.exec(total_query).one()
        return [_stored(r) for r in rows[:limit]], len(rows) > limit, int(total)

    def _previous(self, session: Session, row: _ScanRow) -> _ScanRow | None:
        query = (
            select(_ScanRow)
            .where(_ScanRow.source_key == row.source_key, _ScanRow.id != row.id)
            .where(col(_ScanRow.state).in_(_FINISHED))
            .order_by(col(_ScanRow.complete_time).desc())
        )
        return session.exec(query.limit(1)).first()

    def _findings(self, session: Session, scan_id: str) -> list[StoredFinding]:
        rows = session.exec(select(_FindingRow).where(_FindingRow.scan_id == scan_id)).all()
        return [_stored(r) for r in rows]


def _filtered(query, where: FindingFilter, scan_id: str):  # type: ignore[no-untyped-def]
    query = query.where(_FindingRow.scan_id == scan_id)
    query = query.where(_FindingRow.severity >= int(where.minimum_severity))
    for column, value in (
        (_FindingRow.namespace, where.namespace),
        (_FindingRow.kind, where.kind),
        (_FindingRow.name, where.name),
    ):
        if value:
            query = query.where(column == value)
    if where.control_ids:
        query = query.where(col(_FindingRow.control_id).in_(where.control_ids))
    if not where.include_suppressed:
        query = query.where(col(_FindingRow.suppression_reason).is_(None))
    if not where.include_fixed:
        query = query.where(_FindingRow.state != HistoryState.FIXED.value)
    return query


def _scan_row(record: ScanRecord) -> _ScanRow:
    errors = [
        {
            "uri": e.location.uri,
            "document": e.location.document,
            "line": e.location.line,
            "message": e.message,
        }
        for e in record.errors
    ]
    return _ScanRow(
        id=record.id,
        source_key=record.source_key,
        description=record.description,
        state=record.state.value,
        create_time=record.create_time,
        complete_time=record.complete_time,
        previous_scan=record.previous_scan,
        frameworks=json.dumps(list(record.frameworks)),
        objects_scanned=record.objects_scanned,
        severity_counts=json.dumps(record.severity_counts),
        suppressed_count=record.suppressed_count,
        new_count=record.new_count,
        fixed_count=record.fixed_count,
        errors=json.dumps(errors),
        failure_message=record.failure_message,
    )


def _scan_record(row: _ScanRow) -> ScanRecord:
    errors = tuple(
        ScanError(SourceLocation(e["uri"], e["document"], e["line"]), e["message"])
        for e in json.loads(row.errors)
    )
    return ScanRecord(
        id=row.id,
        source_key=row.source_key,
        description=row.description,
        state=ScanState(row.state),
        create_time=_utc(row.create_time) or row.create_time,
        complete_time=_utc(row.complete_time),
        previous_scan=row.previous_scan,
        frameworks=tuple(json.loads(row.frameworks)),
        objects_scanned=row.objects_scanned,
        severity_counts=json.loads(row.severity_counts),
        suppressed_count=row.suppressed_count,
        new_count=row.new_count,
        fixed_count=row.fixed_count,
        errors=errors,
        failure_message=row.failure_message,
    )


def _finding_row(
    scan_id: str, finding: Finding, state: HistoryState, first_seen: datetime
) -> dict[str, object]:
    ref = finding.object
    suppression = finding.suppression
    return {
        "scan_id": scan_id,
        "id": finding_id(finding),
        "state": state.value,
        "control_id": finding.control_id,
        "severity": int(finding.severity),
        "uri": ref.location.uri,
        "document": ref.location.document,
        "line": ref.location.line,
        "api_version": ref.api_version,
        "kind": ref.kind,
        "namespace": ref.namespace,
        "name": ref.name,
        "field_path": finding.field_path,
        "message": finding.message,
        "patch": json.dumps(list(finding.patch)),
        "suppression_reason": suppression.reason if suppression else None,
        "suppression_origin": suppression.origin if suppression else None,
        "first_seen_time": first_seen,
    }


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time Parallax stores is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _stored(row: _FindingRow) -> StoredFinding:
    suppression = None
    if row.suppression_reason is not None:
        suppression = Suppression(row.suppression_reason, row.suppression_origin or "config")
    finding = Finding(
        control_id=row.control_id,
        severity=Severity(row.severity),
        object=ObjectRef(
            SourceLocation(row.uri, row.document, row.line),
            row.api_version,
            row.kind,
            row.namespace,
            row.name,
        ),
        field_path=row.field_path,
        message=row.message,
        patch=tuple(json.loads(row.patch)),
        suppression=suppression,
    )
    first_seen = _utc(row.first_seen_time) or row.first_seen_time
    return StoredFinding(row.id, row.scan_id, finding, HistoryState(row.state), first_seen)
