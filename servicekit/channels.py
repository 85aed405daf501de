"""Client channels for calling Parallax services: tracing context propagation, a default
deadline on every call, and retries with backoff on UNAVAILABLE only."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc
from opentelemetry.instrumentation.grpc import grpcext
from opentelemetry.sdk.trace import TracerProvider

from servicekit.config import MAX_MESSAGE_BYTES
from servicekit.telemetry import client_tracing

DEFAULT_TIMEOUT = 10.0

_RETRY_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class DefaultDeadline(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Give every call without an explicit `timeout=` a deadline of `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        if details.timeout is not None:
            return details
        return _CallDetails(  # type: ignore[return-value]
            details.method,
            self.seconds,
            details.metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        details: grpc.ClientCallDetails,
        requests: Iterator[Any],
    ) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        details: grpc.ClientCallDetails,
        requests: Iterator[Any],
    ) -> Any:
        return continuation(self._details(details), requests)


def connect(
    address: str,
    *,
    tracer_provider: TracerProvider | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """Open a channel to `address` with tracing, a default deadline and UNAVAILABLE retries."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _RETRY_CONFIG),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    traced = grpcext.intercept_channel(channel, client_tracing(tracer_provider))  # type: ignore[no-untyped-call]
    return grpc.intercept_channel(traced, DefaultDeadline(timeout))
