"""Typed readers for settings from environment variables, shared by each service's `config.py`;
every reader fails fast with a message naming the variable and what it expected."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servicekit import tls
from servicekit.errors import ConfigError

# The largest gRPC message a server accepts or a channel sends and receives.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Set by a supervisor (`parallax up`) to its pid: the service ends with it (serve.follow_parent).
PARENT_VARIABLE = "PARALLAX_PARENT_PID"

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PARENT_VARIABLE",
    "ConfigError",
    "ServerSettings",
    "address",
    "data_dir",
    "integer",
    "number",
    "text",
]


def text(env: Mapping[str, str], name: str, default: str) -> str:
    """Return the variable's value, or `default` when it is unset or empty."""
    return env.get(name) or default


def integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """Return the variable as an int within [low, high]."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    """Return the variable as a float within [low, high]."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def address(env: Mapping[str, str], name: str, default: str | None) -> str:
    """Return a `host:port` address; with no default the variable is required."""
    raw = env.get(name) or default
    if not raw:
        raise ConfigError(f"{name} is required (host:port of the upstream service)")
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name} must be host:port, got {raw!r}")
    return raw


def _optional_address(env: Mapping[str, str], name: str) -> str | None:
    return address(env, name, None) if env.get(name) else None


def data_dir(env: Mapping[str, str]) -> Path:
    """Return PARALLAX_DATA, the directory for SQLite files and run state (default ./data)."""
    return Path(env.get("PARALLAX_DATA") or os.path.join(os.getcwd(), "data"))


@dataclass(frozen=True)
class ServerSettings:
    """What every service process needs to serve: where to listen, where its data lives, which
    database to open, how to log, its TLS material and an optional plaintext health-only port
    for kubelet probes (which cannot present client certificates). Read from PARALLAX_LISTEN,
    PARALLAX_DATA, DATABASE_URL, PARALLAX_LOG_LEVEL, PARALLAX_GRACE_SECONDS, PARALLAX_TLS_DIR or
    PARALLAX_INSECURE, and PARALLAX_HEALTH_LISTEN."""

    service: str
    listen: str
    data_dir: Path
    database_url: str | None
    log_level: str
    grace_seconds: float
    tls: tls.TlsMaterial | None
    health_listen: str | None

    @property
    def run_dir(self) -> Path:
        """Return the directory where running services announce their addresses."""
        return self.data_dir / "run"

    @classmethod
    def from_env(cls, env: Mapping[str, str], service: str, default_port: int) -> ServerSettings:
        """Read and validate the server settings of `service`."""
        level = text(env, "PARALLAX_LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"PARALLAX_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level}"
            )
        return cls(
            service=service,
            listen=address(env, "PARALLAX_LISTEN", f"127.0.0.1:{default_port}"),
            data_dir=data_dir(env),
            database_url=env.get("DATABASE_URL") or None,
            log_level=level,
            grace_seconds=number(env, "PARALLAX_GRACE_SECONDS", 5.0, low=0.0, high=300.0),
            tls=tls.from_env(env),
            health_listen=_optional_address(env, "PARALLAX_HEALTH_LISTEN"),
        )
