"""Composition root of the runtime service: `python -m services.runtime`."""

from __future__ import annotations

import os

from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc

from servicekit import serve
from services.runtime.config import Settings
from services.runtime.servicer import RuntimeServicer

SERVICE_NAME = "parallax.runtime.v1.RuntimeService"


def main() -> None:
    """Serve the runtime service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    servicer = RuntimeServicer()
    registration = serve.Registration(
        SERVICE_NAME, lambda server: pb_grpc.add_RuntimeServiceServicer_to_server(servicer, server)
    )
    serve.run(settings.server, lambda provider: [registration])


if __name__ == "__main__":
    main()
