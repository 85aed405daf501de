"""Persistence of the runtime service (SQLite or PostgreSQL through SQLModel), the only module
that touches SQL: each acknowledged batch is one transaction holding its dedupe record and the
deltas it caused (profiles, changed items, workloads, its node, alerts); `load` rebuilds the
in-memory state after a restart. Tables stay private; callers see domain objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, delete, func, insert
from sqlalchemy import select as core_select
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
    forgotten_alerts: list[str] = field(default_factory=list)


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
        dialect = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._batch = insert(_table(_BatchRow))
        self._upserts = [
            (_upsert(dialect, _ProfileRow, ["name"]), _profile_rows),
            (_upsert(dialect, _ItemRow, ["profile", "category", "item_key"]), _item_rows),
            (_upsert(dialect, _WorkloadRow, ["path"]), _workload_rows),
            (_upsert(dialect, _NodeRow, ["node"]), _node_rows),
            (_upsert(dialect, _AlertRow, ["id"]), _alert_rows),
        ]

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
        """Write `changes` in one transaction; a duplicate batch key makes it fail whole. The
        statements are built once and run as executemany, without the ORM."""
        with self.engine.begin() as connection:
            if changes.batch is not None:
                row = {**changes.batch._asdict(), "received_time": changes.received}
                connection.execute(self._batch, [row])
            for statement, rows in self._upserts:
                found = rows(changes)
                if found:
                    connection.execute(statement, found)
            if changes.forgotten_alerts:
                table = _table(_AlertRow)
                connection.execute(delete(table).where(table.c.id.in_(changes.forgotten_alerts)))

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

    def prune_batches(self, resend_before: float, session_before: float) -> int:
        """Drop the dedupe records received before `resend_before` except the newest of each
        session (a session's older sequences then read as stored), and every record of the
        sessions silent since `session_before`; return how many rows went."""
        table = _table(_BatchRow)
        columns = (table.c.agent_id, table.c.boot_id, table.c.session_id)
        sessions = core_select(
            *columns, func.max(table.c.sequence), func.max(table.c.received_time)
        ).group_by(*columns)
        removed = 0
        with self.engine.begin() as connection:
            for agent_id, boot_id, session_id, newest, last in connection.execute(sessions).all():
                where = [
                    table.c.agent_id == agent_id,
                    table.c.boot_id == boot_id,
                    table.c.session_id == session_id,
                ]
                if last >= session_before:
                    where += [table.c.received_time < resend_before, table.c.sequence < newest]
                removed += connection.execute(delete(table).where(*where)).rowcount
        return removed


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined,no-any-return]


def _upsert(dialect: Any, model: type[SQLModel], keys: list[str]) -> Any:
    statement = dialect(_table(model))
    columns = {c.name: statement.excluded[c.name] for c in _table(model).c if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=columns)


def _profile_rows(changes: Changes) -> list[dict[str, Any]]:
    return [codec.profile_row(p) for p in changes.profiles]


def _item_rows(changes: Changes) -> list[dict[str, Any]]:
    return [codec.item_row(*entry) for entry in changes.items]


def _workload_rows(changes: Changes) -> list[dict[str, Any]]:
    return [codec.workload_row(w) for w in changes.workloads]


def _node_rows(changes: Changes) -> list[dict[str, Any]]:
    return [codec.node_row(n) for n in changes.nodes]


def _alert_rows(changes: Changes) -> list[dict[str, Any]]:
    return [codec.alert_row(a) for a in changes.alerts]
