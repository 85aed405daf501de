"""Composition root of the posture service: `python -m services.posture`."""

from __future__ import annotations

import os

from parallax.posture.v1 import posture_service_pb2_grpc as pb_grpc

from servicekit import serve, storage
from services.posture.config import Settings
from services.posture.livecluster import ClusterAccess
from services.posture.scans import Scanner
from services.posture.servicer import PostureServicer
from services.posture.store import PostureStore

SERVICE_NAME = "parallax.posture.v1.PostureService"


def main() -> None:
    """Serve the posture service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    server = settings.server
    store = PostureStore(
        storage.engine(storage.database_url(server.database_url, server.data_dir, "posture"))
    )
    access = ClusterAccess(settings.kubeconfig or None, settings.in_cluster)
    servicer = PostureServicer(store, Scanner(store, cluster_lister=access.list))
    registration = serve.Registration(
        SERVICE_NAME,
        lambda grpc_server: pb_grpc.add_PostureServiceServicer_to_server(servicer, grpc_server),
    )
    serve.run(server, lambda provider: [registration])


if __name__ == "__main__":
    main()
