"""Settings of the runtime service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.config import ServerSettings

DEFAULT_PORT = 50052


@dataclass(frozen=True)
class Settings:
    """Server settings of the runtime service."""

    server: ServerSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings."""
        return cls(server=ServerSettings.from_env(env, "runtime", DEFAULT_PORT))
