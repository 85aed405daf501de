"""Composition root of the correlator service: `python -m services.correlator`."""

from __future__ import annotations

import os

from parallax.correlator.v1 import correlator_service_pb2_grpc as pb_grpc

from servicekit import serve
from services.correlator.config import Settings
from services.correlator.servicer import CorrelatorServicer

SERVICE_NAME = "parallax.correlator.v1.CorrelatorService"


def main() -> None:
    """Serve the correlator until SIGTERM; upstream addresses are validated at start."""
    settings = Settings.from_env(os.environ)
    servicer = CorrelatorServicer()
    registration = serve.Registration(
        SERVICE_NAME,
        lambda server: pb_grpc.add_CorrelatorServiceServicer_to_server(servicer, server),
    )
    serve.run(settings.server, lambda provider: [registration])


if __name__ == "__main__":
    main()
