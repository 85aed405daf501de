"""Health probing of Parallax services for `parallax status` and `parallax up`."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.channels import connect
from servicekit.tls import TlsMaterial

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
DOWN = "DOWN"


def probe(address: str, tls: TlsMaterial | None = None, timeout: float = 2.0) -> str:
    """Return SERVING, NOT_SERVING or DOWN for the server at `address` (over mTLS with `tls`)."""
    credentials = tls.channel_credentials() if tls is not None else None
    with connect(address, timeout=timeout, credentials=credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return DOWN
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return SERVING
    return NOT_SERVING
