"""Settings of the posture service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.config import ServerSettings, text

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class Settings:
    """Server settings plus cluster access: PARALLAX_KUBECONFIG (a kubeconfig path; empty uses
    the client's default search) and PARALLAX_IN_CLUSTER=true inside Kubernetes."""

    server: ServerSettings
    kubeconfig: str
    in_cluster: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings."""
        return cls(
            server=ServerSettings.from_env(env, "posture", DEFAULT_PORT),
            kubeconfig=text(env, "PARALLAX_KUBECONFIG", ""),
            in_cluster=text(env, "PARALLAX_IN_CLUSTER", "false").lower() == "true",
        )
