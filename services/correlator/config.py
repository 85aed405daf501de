"""Settings of the correlator service: its server settings, the addresses of the three services
it reads through their gRPC contracts (required; start-up fails without them), the deadline of
upstream calls, the feedback loop's interval and where manifests may be read from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servicekit.config import ServerSettings, address, number, text

DEFAULT_PORT = 50054


@dataclass(frozen=True)
class Settings:
    """Server settings; PARALLAX_POSTURE_ADDRESS, PARALLAX_RUNTIME_ADDRESS and
    PARALLAX_POLICYGEN_ADDRESS (required); PARALLAX_UPSTREAM_TIMEOUT (seconds per upstream call,
    default 10); PARALLAX_VERIFY_TIMEOUT (seconds per seccomp verification, default 120);
    PARALLAX_LOOP_SECONDS (feedback loop interval, default 30; runtime alerts wake it early);
    PARALLAX_MANIFEST_ROOT (directory below which the manifest files named by posture findings
    may be read; unset reads none, and NetworkPolicy recommendations need them)."""

    server: ServerSettings
    posture_address: str
    runtime_address: str
    policygen_address: str
    upstream_timeout: float
    verify_timeout: float
    loop_seconds: float
    manifest_root: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings; upstream addresses have no default."""
        root = text(env, "PARALLAX_MANIFEST_ROOT", "")
        return cls(
            server=ServerSettings.from_env(env, "correlator", DEFAULT_PORT),
            posture_address=address(env, "PARALLAX_POSTURE_ADDRESS", None),
            runtime_address=address(env, "PARALLAX_RUNTIME_ADDRESS", None),
            policygen_address=address(env, "PARALLAX_POLICYGEN_ADDRESS", None),
            upstream_timeout=number(env, "PARALLAX_UPSTREAM_TIMEOUT", 10.0, low=0.1, high=300.0),
            verify_timeout=number(env, "PARALLAX_VERIFY_TIMEOUT", 120.0, low=1.0, high=900.0),
            loop_seconds=number(env, "PARALLAX_LOOP_SECONDS", 30.0, low=0.05, high=86400.0),
            manifest_root=Path(root) if root else None,
        )
