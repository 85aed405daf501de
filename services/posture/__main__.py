"""Composition root of the posture service: `python -m services.posture`."""

from __future__ import annotations

import os

from servicekit import serve, storage
from services.posture.config import Settings
from services.posture.livecluster import ClusterAccess
from services.posture.scans import Scanner
from services.posture.servicer import PostureServicer, registration
from services.posture.store import PostureStore


def main() -> None:
    """Serve the posture service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    server = settings.server
    url = storage.database_url(server.database_url, server.data_dir, "posture")
    store = PostureStore(storage.engine(url))
    access = ClusterAccess(settings.kubeconfig or None, settings.in_cluster)
    servicer = PostureServicer(store, Scanner(store, cluster_lister=access.list))
    serve.run(server, lambda provider: [registration(servicer)])


if __name__ == "__main__":
    main()
