"""The SQLModel engine every service's store opens: a SQLite file in the data directory by
default (WAL, foreign keys on), PostgreSQL when DATABASE_URL names one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from servicekit.config import ConfigError


def database_url(url: str | None, data_dir: Path, service: str) -> str:
    """Resolve the URL to use: the given one, or `sqlite:///<data_dir>/<service>.db`."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{data_dir / f'{service}.db'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfigError(
        "DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB, "
        f"got {url.split('://', 1)[0]}://..."
    )


def engine(url: str) -> Engine:
    """Create an engine for `url`, tuned for concurrent service use."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if url in ("sqlite://", "sqlite:///:memory:"):
        from sqlalchemy.pool import StaticPool

        kwargs["poolclass"] = StaticPool
    created = create_engine(url, **kwargs)

    @event.listens_for(created, "connect")
    def _pragmas(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return created


def create_tables(bound: Engine, tables: Sequence[type[SQLModel]]) -> None:
    """Create the given tables (only these: services share SQLModel's metadata object)."""
    SQLModel.metadata.create_all(bound, tables=[t.__table__ for t in tables])  # type: ignore[attr-defined]
