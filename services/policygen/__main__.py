"""Composition root of the policygen service: `python -m services.policygen`."""

from __future__ import annotations

import os

from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc

from servicekit import serve
from services.policygen.config import Settings
from services.policygen.servicer import PolicygenServicer

SERVICE_NAME = "parallax.policygen.v1.PolicygenService"


def main() -> None:
    """Serve the policygen service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    servicer = PolicygenServicer()
    registration = serve.Registration(
        SERVICE_NAME,
        lambda server: pb_grpc.add_PolicygenServiceServicer_to_server(servicer, server),
    )
    serve.run(settings.server, lambda provider: [registration])


if __name__ == "__main__":
    main()
