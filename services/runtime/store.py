"""Persistence of the runtime service (SQLite or PostgreSQL through SQLModel), the only module
that touches SQL: each acknowledged batch is one transaction holding its dedupe record and the
deltas it caused (profiles, changed items, workloads, its node, alerts); `load` rebuilds the
in-memory state after a restart. Tables stay private; callers see domain objects.

The webhook outbox: a store created with `outbox=True` (when a webhook is configured) also
writes, in that same transaction, one outbox row per alert the transaction creates (an alert id
not yet stored), holding the alert's JSON payload as of then. So an acknowledged batch's new
alerts are as durable as the batch, whatever happens to the process afterwards, and the engine
needs no part in it: it commits its Changes as always. The webhook's worker (outputs.Webhook)
reads the rows in the order they were written (`deliveries`) and takes each out when it was
delivered or refused for good (`finish_delivery`), which also counts it in a totals table, in
one transaction; `outbox_counts` reads delivered, pending and failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, delete, func, insert
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
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


class _OutboxRow(SQLModel, table=True):
    __tablename__ = "runtime_alert_outbox"
    position: int | None = Field(default=None, primary_key=True)  # the order of delivery
    alert_id: str = Field(unique=True)
    enqueue_time: float
    payload: str


class _OutboxTotalRow(SQLModel, table=True):
    __tablename__ = "runtime_alert_outbox_totals"
    outcome: str = Field(primary_key=True)  # "delivered" or "failed"
    total: int


_TABLES: list[type[SQLModel]] = [
    _BatchRow,
    _ProfileRow,
    _ItemRow,
    _WorkloadRow,
    _NodeRow,
    _AlertRow,
    _OutboxRow,
    _OutboxTotalRow,
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


@dataclass(frozen=True)
class Delivery:
    """A new alert waiting in the webhook outbox: its place in line and its JSON payload."""

    position: int
    alert_id: str
    enqueue_time: float
    payload: bytes


@dataclass(frozen=True)
class OutboxCounts:
    """The webhook outbox's figures: alerts delivered and failed (refused for good) since the
    database was created, and alerts waiting."""

    delivered: int = 0
    pending: int = 0
    failed: int = 0


@dataclass
class Snapshot:
    """The whole stored state, as `load` returns it."""

    profiles: list[Profile]
    workloads: list[WorkloadRecord]
    nodes: list[Node]
    alerts: list[Alert]


class RuntimeStore:
    """Batches, profiles, workloads, nodes and alerts in one database; with `outbox`, also the
    new alerts a webhook must deliver."""

    def __init__(self, engine: Engine, outbox: bool = False) -> None:
        self.engine = engine
        self.outbox = outbox
        create_tables(engine, _TABLES)
        dialect = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._enqueue = dialect(_table(_OutboxRow)).on_conflict_do_nothing(
            index_elements=["alert_id"]
        )
        totals = _table(_OutboxTotalRow)
        self._count = dialect(totals).on_conflict_do_update(
            index_elements=["outcome"], set_={"total": totals.c.total + 1}
        )
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
        statements are built once and run as executemany, without the ORM. With the outbox,
        the alerts not stored before are enqueued for the webhook in the same transaction."""
        with self.engine.begin() as connection:
            if changes.batch is not None:
                row = {**changes.batch._asdict(), "received_time": changes.received}
                connection.execute(self._batch, [row])
            fresh = _unstored(connection, changes.alerts) if self.outbox else []
            for statement, rows in self._upserts:
                found = rows(changes)
                if found:
                    connection.execute(statement, found)
            if fresh:
                connection.execute(self._enqueue, [codec.outbox_row(a) for a in fresh])
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

    def deliveries(self, limit: int) -> list[Delivery]:
        """Return the first `limit` alerts waiting in the outbox, in the order of delivery."""
        table = _table(_OutboxRow)
        query = core_select(table).order_by(table.c.position).limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [Delivery(r.position, r.alert_id, r.enqueue_time, r.payload.encode()) for r in rows]

    def finish_delivery(self, position: int, delivered: bool) -> None:
        """Take a delivery out of the outbox, counting it as delivered or as failed."""
        table = _table(_OutboxRow)
        with self.engine.begin() as connection:
            gone = connection.execute(delete(table).where(table.c.position == position)).rowcount
            if gone:
                outcome = "delivered" if delivered else "failed"
                connection.execute(self._count, [{"outcome": outcome, "total": 1}])

    def outbox_counts(self) -> OutboxCounts:
        """Return how many alerts the webhook delivered, has waiting, and failed."""
        totals, outbox = _table(_OutboxTotalRow), _table(_OutboxRow)
        with self.engine.connect() as connection:
            done = dict(connection.execute(core_select(totals.c.outcome, totals.c.total)).all())
            pending = connection.execute(core_select(func.count()).select_from(outbox)).scalar()
        return OutboxCounts(done.get("delivered", 0), pending or 0, done.get("failed", 0))

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


def _unstored(connection: Connection, alerts: list[Alert]) -> list[Alert]:
    """Return the alerts of `alerts` that have no row yet: the ones being created."""
    if not alerts:
        return []
    table = _table(_AlertRow)
    ids = [a.id for a in alerts]
    stored = set(connection.execute(core_select(table.c.id).where(table.c.id.in_(ids))).scalars())
    return [a for a in alerts if a.id not in stored]


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
