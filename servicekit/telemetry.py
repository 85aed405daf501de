"""OpenTelemetry wiring for servers and clients: one tracer provider per process, exporting over
OTLP/gRPC when the standard `OTEL_*` variables name an endpoint, and the explicit grpc
interceptors that trace every RPC except health checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.instrumentation.grpc import client_interceptor, server_interceptor
from opentelemetry.instrumentation.grpc.filters import health_check, negate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def tracer_provider(service: str, env: Mapping[str, str]) -> TracerProvider:
    """Build the process's tracer provider for `service` from the standard OTEL variables.

    Spans are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, to the console when OTEL_TRACES_EXPORTER is
    `console`, and nowhere when it is `none` or nothing is configured.
    """
    name = env.get("OTEL_SERVICE_NAME") or f"parallax-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporter = _exporter(env)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    if (env.get("OTEL_TRACES_EXPORTER") or "").lower() == "console":
        return ConsoleSpanExporter()
    found = otlp_endpoint(env, "traces")
    if found is None:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    endpoint, insecure = found
    return OTLPSpanExporter(endpoint=endpoint, insecure=insecure)


def otlp_endpoint(env: Mapping[str, str], signal: str) -> tuple[str, bool] | None:
    """The OTLP/gRPC endpoint for `signal` ("traces", "metrics" or "logs") and whether it is
    plaintext, from the standard variables (OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT, else
    OTEL_EXPORTER_OTLP_ENDPOINT; http:// or OTEL_EXPORTER_OTLP_INSECURE=true for plaintext);
    None when none is set or OTEL_<SIGNAL>_EXPORTER is not `otlp`."""
    upper = signal.upper()
    if (env.get(f"OTEL_{upper}_EXPORTER") or "otlp").lower() != "otlp":
        return None
    endpoint = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return None
    insecure = endpoint.startswith("http://") or (
        env.get("OTEL_EXPORTER_OTLP_INSECURE", "").lower() == "true"
    )
    return endpoint, insecure


def server_tracing(provider: TracerProvider) -> Any:
    """Return the server interceptor that opens a span per RPC, health checks excluded."""
    return server_interceptor(tracer_provider=provider, filter_=negate(health_check()))  # type: ignore[no-untyped-call]


def client_tracing(provider: TracerProvider | None) -> Any:
    """Return the client interceptor that opens a span per call and propagates W3C context."""
    return client_interceptor(tracer_provider=provider, filter_=negate(health_check()))  # type: ignore[no-untyped-call]
