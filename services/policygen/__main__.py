"""Composition root of the policygen service: `python -m services.policygen`."""

from __future__ import annotations

import os

from servicekit import serve
from services.policygen.cluster_source import ClusterSource
from services.policygen.config import Settings
from services.policygen.runtime_client import RuntimeProfiles
from services.policygen.servicer import PolicygenServicer, registration


def main() -> None:
    """Serve the policygen service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    runtime = RuntimeProfiles(settings.runtime_address, settings.server.tls)
    cluster = (
        ClusterSource(settings.kubeconfig, settings.in_cluster) if settings.cluster_access else None
    )
    servicer = PolicygenServicer(runtime.get, runtime.list, cluster)
    serve.run(settings.server, lambda provider: [registration(servicer)])


if __name__ == "__main__":
    main()
