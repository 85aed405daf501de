"""Settings of the policygen service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.config import ServerSettings

DEFAULT_PORT = 50053


@dataclass(frozen=True)
class Settings:
    """Server settings of the policygen service."""

    server: ServerSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings."""
        return cls(server=ServerSettings.from_env(env, "policygen", DEFAULT_PORT))
