"""Persistence of the runtime service (SQLite or PostgreSQL through SQLModel), the only module
that touches SQL: each acknowledged batch is one transaction holding its dedupe record and the
deltas it caused (profiles, changed items, workloads, its node, alerts); `load` rebuilds the
in-memory state after a restart. Tables stay private; callers see domain objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from servicekit.storage import create_tables
from services.runtime import codec, domain
from services.runtime.alerts import Alert
from services.runtime.learning import Profile, WorkloadRecord
from services.runtime.nodes import Node
from services.runtime.profiles import Category, ItemKey


class _BatchRow(SQLModel, table=True):
    __tablename__ = "runtime_batches"
    agent_id: str = Field(primary_key=True)
    boot_id: str = Field(primary_key=True)
    session_id: str = Field(primary_key=True)
    sequence: int = Field(primary_key=True)
    received_time: float


class _ProfileRow(SQLModel, table=True):
    __tablename__ = "runtime_profiles"
    name: str = Field(primary_key=True)
    workload: str = Field(index=True)
    data: str


class _ItemRow(SQLModel, table=True):
    __tablename__ = "runtime_profile_items"
    profile: str = Field(primary_key=True)
    category: str = Field(primary_key=True)
    item_key: str = Field(primary_key=True)
    data: str


class _WorkloadRow(SQLModel, table=True):
    __tablename__ = "runtime_workloads"
    path: str = Field(primary_key=True)
    data: str


class _NodeRow(SQLModel, table=True):
    __tablename__ = "runtime_nodes"
    node: str = Field(primary_key=True)
    data: str


class _AlertRow(SQLModel, table=True):
    __tablename__ = "runtime_alerts"
    id: str = Field(primary_key=True)
    rule_id: str = Field(index=True)
    state: int = Field(index=True)
    last_seen: float = Field(index=True)
    data: str


_TABLES: list[type[SQLModel]] = [
    _BatchRow,
    _ProfileRow,
    _ItemRow,
    _WorkloadRow,
    _NodeRow,
    _AlertRow,
]


@dataclass
class Changes:
    """Everything one transaction writes; `batch` is the dedupe record, when from a batch."""

    batch: domain.BatchKey | None = None
    received: float = 0.0
    profiles: list[Profile] = field(default_factory=list)
    items: list[tuple[str, Category, ItemKey, Any]] = field(default_factory=list)
    workloads: list[WorkloadRecord] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class Snapshot:
    """The whole stored state, as `load` returns it."""

    profiles: list[Profile]
    workloads: list[WorkloadRecord]
    nodes: list[Node]
    alerts: list[Alert]


class RuntimeStore:
    """Batches, profiles, workloads, nodes and alerts in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, _TABLES)
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def sequences(self, key: domain.BatchKey) -> set[int]:
        """Return the sequences stored for the session of `key`."""
        query = select(_BatchRow.sequence).where(
            _BatchRow.agent_id == key.agent_id,
            _BatchRow.boot_id == key.boot_id,
            _BatchRow.session_id == key.session_id,
        )
        with Session(self.engine) as session:
            return set(session.exec(query).all())

    def commit(self, changes: Changes) -> None:
        """Write `changes` in one transaction; a duplicate batch key makes it fail whole."""
        with Session(self.engine) as session, session.begin():
            if changes.batch is not None:
                session.add(_BatchRow(**changes.batch._asdict(), received_time=changes.received))
            self._upsert(
                session, _ProfileRow, ["name"], [codec.profile_row(p) for p in changes.profiles]
            )
            self._upsert(
                session,
                _ItemRow,
                ["profile", "category", "item_key"],
                [codec.item_row(*entry) for entry in changes.items],
            )
            self._upsert(
                session, _WorkloadRow, ["path"], [codec.workload_row(w) for w in changes.workloads]
            )
            self._upsert(session, _NodeRow, ["node"], [codec.node_row(n) for n in changes.nodes])
            self._upsert(session, _AlertRow, ["id"], [codec.alert_row(a) for a in changes.alerts])

    def load(self) -> Snapshot:
        """Read everything back, for the engine's start."""
        with Session(self.engine) as session:
            profiles = {r.name: codec.profile(r.data) for r in session.exec(select(_ProfileRow))}
            for row in session.exec(select(_ItemRow)):
                owner = profiles.get(row.profile)
                if owner is not None:
                    codec.attach_item(owner, row.category, row.item_key, row.data)
            workloads = [codec.workload(r.data) for r in session.exec(select(_WorkloadRow))]
            nodes = [codec.node(r.data) for r in session.exec(select(_NodeRow))]
            alerts = [codec.alert(r.data) for r in session.exec(select(_AlertRow))]
        for profile in profiles.values():
            profile.dirty.clear()
            profile.changed = False
        return Snapshot(list(profiles.values()), workloads, nodes, alerts)

    def forget_batches(self, before: float) -> None:
        """Drop dedupe records received before `before` (sessions long finished)."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(_BatchRow).where(_BatchRow.received_time < before))  # type: ignore[arg-type]

    def _upsert(
        self, session: Session, table: type[SQLModel], keys: list[str], rows: list[dict[str, Any]]
    ) -> None:
        if not rows:
            return
        statement = self._insert(table.__table__)  # type: ignore[attr-defined]
        columns = {c: statement.excluded[c] for c in rows[0] if c not in keys}
        session.execute(statement.on_conflict_do_update(index_elements=keys, set_=columns), rows)
