"""Settings of the correlator service: its server settings, the addresses of the three services
it reads through their gRPC contracts (required; start-up fails without them), the deadline of
upstream calls, the feedback loop's interval and where manifests may be read from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servicekit.config import ConfigError, ServerSettings, address, number, text

DEFAULT_PORT = 50054
# Seconds of a verification beyond its two runs: the negative-control probe (10 s at most).
VERIFY_SLACK = 15.0


@dataclass(frozen=True)
class Settings:
    """Server settings; PARALLAX_POSTURE_ADDRESS, PARALLAX_RUNTIME_ADDRESS and
    PARALLAX_POLICYGEN_ADDRESS (required); PARALLAX_UPSTREAM_TIMEOUT (seconds per upstream call,
    default 10); PARALLAX_VERIFY_RUN_SECONDS (how long policygen runs an entrypoint under a seccomp
    profile, default 5: a server still running then with nothing denied counts as verified);
    PARALLAX_VERIFY_TIMEOUT (deadline of one seccomp verification, which runs the entrypoint
    twice plus a probe: at least twice the run time plus 15, default 120); PARALLAX_LOOP_SECONDS
    (interval of the incident and policy passes, default 30; runtime alerts wake both early);
    PARALLAX_MANIFEST_ROOT (directory below which the manifest files named by posture findings
    may be read; unset reads none, and NetworkPolicy recommendations need them)."""

    server: ServerSettings
    posture_address: str
    runtime_address: str
    policygen_address: str
    upstream_timeout: float
    verify_run_seconds: float
    verify_timeout: float
    loop_seconds: float
    manifest_root: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings; upstream addresses have no default."""
        root = text(env, "PARALLAX_MANIFEST_ROOT", "")
        run = number(env, "PARALLAX_VERIFY_RUN_SECONDS", 5.0, low=0.5, high=300.0)
        deadline = number(env, "PARALLAX_VERIFY_TIMEOUT", 120.0, low=1.0, high=900.0)
        if deadline < 2 * run + VERIFY_SLACK:
            raise ConfigError(
                f"PARALLAX_VERIFY_TIMEOUT ({deadline:g}) must be at least twice "
                f"PARALLAX_VERIFY_RUN_SECONDS plus {VERIFY_SLACK:g} ({2 * run + VERIFY_SLACK:g})"
            )
        return cls(
            server=ServerSettings.from_env(env, "correlator", DEFAULT_PORT),
            posture_address=address(env, "PARALLAX_POSTURE_ADDRESS", None),
            runtime_address=address(env, "PARALLAX_RUNTIME_ADDRESS", None),
            policygen_address=address(env, "PARALLAX_POLICYGEN_ADDRESS", None),
            upstream_timeout=number(env, "PARALLAX_UPSTREAM_TIMEOUT", 10.0, low=0.1, high=300.0),
            verify_run_seconds=run,
            verify_timeout=deadline,
            loop_seconds=number(env, "PARALLAX_LOOP_SECONDS", 30.0, low=0.05, high=86400.0),
            manifest_root=Path(root) if root else None,
        )
