"""Persistence of the correlator (SQLite or PostgreSQL through SQLModel): imported vulnerability
reports, per-workload vulnerability verdicts, incidents and recommendations. The only correlator
module that touches SQL; rendered messages are kept as opaque bytes next to the columns that
filters and ordering need. Returns domain records and raises NotFound."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from servicekit.storage import create_tables
from services.correlator.domain import Workload
from services.correlator.store_recommendations import RecommendationRow, RecommendationRows


class _ReportRow(SQLModel, table=True):
    __tablename__ = "correlator_reports"
    id: str = Field(primary_key=True)
    image_ref: str = Field(index=True)
    image_digest: str
    format: int
    import_time: datetime
    package_count: int
    vulnerability_count: int
    files_present: bool
    parsed: str


class _VulnRow(SQLModel, table=True):
    __tablename__ = "correlator_vulnerabilities"
    id: str = Field(primary_key=True)
    report_id: str = Field(index=True)
    image_ref: str = Field(index=True)
    namespace: str = Field(index=True)
    kind: str
    name: str
    container: str
    severity: int
    usage: int
    payload: bytes


class _IncidentRow(SQLModel, table=True):
    __tablename__ = "correlator_incidents"
    id: str = Field(primary_key=True)
    namespace: str = Field(index=True)
    kind: str
    name: str
    severity: int
    contained: bool
    resolved: bool
    create_time: datetime
    update_time: datetime = Field(index=True)
    payload: bytes


@dataclass(frozen=True)
class StoredReport:
    """An imported report with its parsed content (JSON of packages and findings)."""

    id: str
    image_ref: str
    image_digest: str
    format: int
    import_time: datetime
    package_count: int
    vulnerability_count: int
    files_present: bool
    parsed: str


@dataclass(frozen=True)
class Row:
    """A stored rendered message (vulnerability or incident) with its filter columns."""

    id: str
    workload: Workload
    container: str
    severity: int
    flag: int
    payload: bytes
    create_time: datetime | None = None
    update_time: datetime | None = None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class CorrelatorStore(RecommendationRows):
    """Reports, vulnerabilities, incidents and recommendations in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, [_ReportRow, _VulnRow, _IncidentRow, RecommendationRow])

    # --- vulnerability reports -----------------------------------------------------------
    def put_report(self, report: StoredReport) -> None:
        """Store a report, replacing one for the same image and digest and its verdicts."""
        with Session(self.engine) as session:
            old = session.exec(
                select(_ReportRow).where(
                    _ReportRow.image_ref == report.image_ref,
                    _ReportRow.image_digest == report.image_digest,
                )
            ).all()
            for row in old:
                session.execute(delete(_VulnRow).where(col(_VulnRow.report_id) == row.id))
                session.delete(row)
            session.add(_ReportRow(**report.__dict__))
            session.commit()

    def reports(self) -> list[StoredReport]:
        """Every stored report, oldest first."""
        with Session(self.engine) as session:
            rows = session.exec(select(_ReportRow).order_by(col(_ReportRow.import_time))).all()
            return [
                StoredReport(**{**r.model_dump(), "import_time": _utc(r.import_time)}) for r in rows
            ]

    def replace_vulnerabilities(self, report_id: str, rows: list[Row]) -> None:
        """Replace the verdict rows of one report."""
        with Session(self.engine) as session:
            session.execute(delete(_VulnRow).where(col(_VulnRow.report_id) == report_id))
            report = session.get(_ReportRow, report_id)
            image = report.image_ref if report else ""
            for r in rows:
                w = r.workload
                session.add(
                    _VulnRow(
                        id=r.id,
                        report_id=report_id,
                        image_ref=image,
                        namespace=w.namespace,
                        kind=w.kind,
                        name=w.name,
                        container=r.container,
                        severity=r.severity,
                        usage=r.flag,
                        payload=r.payload,
                    )
                )
            session.commit()

    def vulnerabilities(self, namespace: str = "", image_ref: str = "") -> list[Row]:
        """Verdict rows, highest severity first."""
        with Session(self.engine) as session:
            query = select(_VulnRow)
            if namespace:
                query = query.where(_VulnRow.namespace == namespace)
            if image_ref:
                query = query.where(_VulnRow.image_ref == image_ref)
            query = query.order_by(col(_VulnRow.severity).desc(), col(_VulnRow.id))
            return [
                Row(
                    r.id,
                    Workload(r.namespace, r.kind, r.name),
                    r.container,
                    r.severity,
                    r.usage,
                    r.payload,
                )
                for r in session.exec(query).all()
            ]

    # --- incidents -----------------------------------------------------------------------
    def put_incident(self, row: Row, resolved: bool, now: float) -> tuple[bool, bool]:
        """Insert or update an incident; return (created, changed)."""
        with Session(self.engine) as session:
            old = session.get(_IncidentRow, row.id)
            if old is not None and old.payload == row.payload and old.resolved == resolved:
                return False, False
            w = row.workload
            created = old is None
            stored = old or _IncidentRow(
                id=row.id,
                create_time=_ts(now),
                update_time=_ts(now),
                namespace=w.namespace,
                kind=w.kind,
                name=w.name,
                severity=row.severity,
                contained=bool(row.flag),
                resolved=resolved,
                payload=row.payload,
            )
            stored.severity, stored.contained, stored.resolved = (
                row.severity,
                bool(row.flag),
                resolved,
            )
            stored.payload, stored.update_time = row.payload, _ts(now)
            session.add(stored)
            session.commit()
            return created, True

    def incidents(self, namespace: str = "", include_resolved: bool = False) -> list[Row]:
        """Incidents, newest first."""
        with Session(self.engine) as session:
            query = select(_IncidentRow)
            if namespace:
                query = query.where(_IncidentRow.namespace == namespace)
            if not include_resolved:
                query = query.where(col(_IncidentRow.resolved).is_(False))
            query = query.order_by(col(_IncidentRow.create_time).desc(), col(_IncidentRow.id))
            return [
                Row(
                    r.id,
                    Workload(r.namespace, r.kind, r.name),
                    "",
                    r.severity,
                    int(r.contained),
                    r.payload,
                    _utc(r.create_time),
                    _utc(r.update_time),
                )
                for r in session.exec(query).all()
            ]
