"""Settings of the policygen service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.config import ServerSettings, address, text

DEFAULT_PORT = 50053
DEFAULT_RUNTIME_ADDRESS = "127.0.0.1:50052"


@dataclass(frozen=True)
class Settings:
    """Server settings; PARALLAX_RUNTIME_ADDRESS, the runtime service profiles are fetched from
    when a request names a workload (default 127.0.0.1:50052; inline profiles need none); and
    cluster access for requests without inline objects: PARALLAX_KUBECONFIG (a kubeconfig path)
    or PARALLAX_IN_CLUSTER=true inside Kubernetes. With neither, objects must come inline."""

    server: ServerSettings
    runtime_address: str
    kubeconfig: str
    in_cluster: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings."""
        return cls(
            server=ServerSettings.from_env(env, "policygen", DEFAULT_PORT),
            runtime_address=address(env, "PARALLAX_RUNTIME_ADDRESS", DEFAULT_RUNTIME_ADDRESS),
            kubeconfig=text(env, "PARALLAX_KUBECONFIG", ""),
            in_cluster=text(env, "PARALLAX_IN_CLUSTER", "false").lower() == "true",
        )

    @property
    def cluster_access(self) -> bool:
        """Whether a cluster is configured to read objects from."""
        return bool(self.kubeconfig) or self.in_cluster
