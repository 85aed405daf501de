"""Persistence of the feedback loop's recommendations, part of the correlator store: the table,
and the methods CorrelatorStore inherits. Only the store touches SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from servicekit.errors import NotFound
from services.correlator import recommendations as rec
from services.correlator.domain import Workload


class RecommendationRow(SQLModel, table=True):
    __tablename__ = "correlator_recommendations"
    id: str = Field(primary_key=True)
    namespace: str = Field(index=True)
    kind_name: str
    name: str
    container: str
    kind: int
    state: int = Field(index=True)
    create_time: datetime = Field(index=True)
    record: str
    policy: bytes
    verification: bytes


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class RecommendationRows:
    """Recommendations by name, newest first; CorrelatorStore sets `engine`."""

    engine: Engine

    def put_recommendation(self, item: rec.Recommendation) -> None:
        """Insert or replace a recommendation."""
        record = {k: v for k, v in item.__dict__.items() if k not in ("policy", "verification")}
        record["workload"] = item.workload.__dict__
        w = item.workload
        with Session(self.engine) as session:
            row = session.get(RecommendationRow, item.name)
            values: dict[str, Any] = {
                "namespace": w.namespace, "kind_name": w.kind, "name": w.name,
                "container": item.container, "kind": int(item.kind), "state": int(item.state),
                "create_time": _ts(item.create_time), "record": json.dumps(record),
                "policy": item.policy, "verification": item.verification,
            }  # fmt: skip
            if row is None:
                row = RecommendationRow(id=item.name, **values)
            else:
                for name, value in values.items():
                    setattr(row, name, value)
            session.add(row)
            session.commit()

    def recommendation(self, name: str) -> rec.Recommendation:
        """Return one recommendation, or raise NotFound."""
        with Session(self.engine) as session:
            row = session.get(RecommendationRow, name)
            if row is None:
                raise NotFound(f"recommendation {name} does not exist")
            return _recommendation(row)

    def recommendations(self, namespace: str = "", state: int = 0) -> list[rec.Recommendation]:
        """Recommendations, newest first."""
        with Session(self.engine) as session:
            query = select(RecommendationRow)
            if namespace:
                query = query.where(RecommendationRow.namespace == namespace)
            if state:
                query = query.where(RecommendationRow.state == state)
            query = query.order_by(
                col(RecommendationRow.create_time).desc(), col(RecommendationRow.id).desc()
            )
            return [_recommendation(r) for r in session.exec(query).all()]


def _recommendation(row: RecommendationRow) -> rec.Recommendation:
    record = json.loads(row.record)
    record["workload"] = Workload(**record["workload"])
    record["kind"], record["state"] = rec.Kind(record["kind"]), rec.State(record["state"])
    record["readiness"] = rec.Readiness(record["readiness"])
    for key in ("allowed", "source_profiles", "closes_findings", "closes_control_ids"):
        record[key] = tuple(record[key])
    return rec.Recommendation(**record, policy=row.policy, verification=row.verification)
