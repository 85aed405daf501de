"""Settings of the runtime service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.config import ConfigError, ServerSettings, number, text

DEFAULT_PORT = 50052


@dataclass(frozen=True)
class Settings:
    """Server settings plus: PARALLAX_LEARNING_WINDOW_SECONDS (default learning window, 86400),
    PARALLAX_ALERTS_STDOUT=true (alerts as JSON lines on stdout), PARALLAX_ALERT_WEBHOOK_URL
    (POST each new alert as JSON, from a durable outbox, retried until delivered or refused), and
    PARALLAX_TICK_SECONDS (how often learning windows are checked without events)."""

    server: ServerSettings
    learning_window: float
    alerts_stdout: bool
    webhook_url: str
    tick_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings."""
        webhook = text(env, "PARALLAX_ALERT_WEBHOOK_URL", "")
        if webhook and not webhook.startswith(("http://", "https://")):
            raise ConfigError(f"PARALLAX_ALERT_WEBHOOK_URL must be an http(s) URL, got {webhook!r}")
        return cls(
            server=ServerSettings.from_env(env, "runtime", DEFAULT_PORT),
            learning_window=number(
                env, "PARALLAX_LEARNING_WINDOW_SECONDS", 86400.0, low=1.0, high=30 * 86400.0
            ),
            alerts_stdout=text(env, "PARALLAX_ALERTS_STDOUT", "false").lower() == "true",
            webhook_url=webhook,
            tick_seconds=number(env, "PARALLAX_TICK_SECONDS", 5.0, low=0.05, high=3600.0),
        )
