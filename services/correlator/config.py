"""Settings of the correlator service: its server settings and the addresses of the three
services it reads through their gRPC contracts (required; start-up fails without them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.config import ServerSettings, address, number

DEFAULT_PORT = 50054


@dataclass(frozen=True)
class Settings:
    """Server settings, upstream addresses and the deadline for upstream calls."""

    server: ServerSettings
    posture_address: str
    runtime_address: str
    policygen_address: str
    upstream_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings; upstream addresses have no default."""
        return cls(
            server=ServerSettings.from_env(env, "correlator", DEFAULT_PORT),
            posture_address=address(env, "PARALLAX_POSTURE_ADDRESS", None),
            runtime_address=address(env, "PARALLAX_RUNTIME_ADDRESS", None),
            policygen_address=address(env, "PARALLAX_POLICYGEN_ADDRESS", None),
            upstream_timeout=number(env, "PARALLAX_UPSTREAM_TIMEOUT", 10.0, low=0.1, high=300.0),
        )
