"""The shared server bootstrap on a real server bound to port 0: error mapping, tracing across
two services, OTLP export to a real receiver, health, reflection and graceful stop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from servicekit import serve
from servicekit.channels import connect
from servicekit.errors import InvalidArgument, NotFound
from servicekit.telemetry import tracer_provider
from tests.collector import Collector

Behaviour = Callable[[bytes, grpc.ServicerContext], bytes]


def generic(service: str, methods: dict[str, Behaviour]) -> serve.Registration:
    """A raw-bytes service, so the kit is tested without any generated code."""
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
    return serve.Registration(
        service,
        lambda server: server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),)
        ),
    )


def raising(exc: Exception) -> Behaviour:
    def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise exc

    return behaviour


@pytest.fixture
def server(spans: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[serve.RunningServer]:
    provider, _ = spans
    registration = generic(
        "test.Errors",
        {
            "NotFound": raising(NotFound("scan scans/42 does not exist")),
            "Invalid": raising(InvalidArgument("page_size must not be negative")),
            "Crash": raising(RuntimeError("secret database password hunter2")),
        },
    )
    running = serve.start([registration], listen="127.0.0.1:0", tracer_provider=provider)
    yield running
    running.stop(grace=1)


def call(address: str, method: str) -> grpc.RpcError:
    with connect(address, timeout=5) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(b"", timeout=5)
    return caught.value


@pytest.mark.parametrize(
    ("method", "code", "details"),
    [
        ("/test.Errors/NotFound", grpc.StatusCode.NOT_FOUND, "scan scans/42 does not exist"),
        (
            "/test.Errors/Invalid",
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size must not be negative",
        ),
    ],
    ids=["not-found", "invalid-argument"],
)
def test_domain_errors_keep_code_and_message(
    server: serve.RunningServer, method: str, code: grpc.StatusCode, details: str
) -> None:
    error = call(server.address, method)
    assert error.code() == code  # type: ignore[attr-defined]
    assert error.details() == details  # type: ignore[attr-defined]


def test_unexpected_exception_is_internal_without_details(
    server: serve.RunningServer, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    error = call(server.address, "/test.Errors/Crash")
    assert error.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert "hunter2" not in error.details()  # type: ignore[attr-defined]
    assert "internal error" in error.details()  # type: ignore[attr-defined]
    _, exporter = spans
    (span,) = [s for s in exporter.get_finished_spans() if s.name.endswith("Crash")]
    assert any(event.name == "exception" for event in span.events)


def test_health_reflection_and_graceful_stop(server: serve.RunningServer) -> None:
    with connect(server.address, timeout=5) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="test.Errors"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in answer.list_services_response.service}
        assert {"test.Errors", "grpc.health.v1.Health"} <= names
        server.stop(grace=1)
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_call_across_two_services_is_one_trace(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    backend = serve.start(
        [generic("test.Backend", {"Echo": lambda request, context: request})],
        listen="127.0.0.1:0",
        tracer_provider=provider,
    )
    channel = connect(backend.address, tracer_provider=provider, timeout=5)

    def relay(request: bytes, context: grpc.ServicerContext) -> bytes:
        reply: bytes = channel.unary_unary("/test.Backend/Echo")(request, timeout=5)
        return reply

    frontend = serve.start(
        [generic("test.Frontend", {"Relay": relay})], listen="127.0.0.1:0", tracer_provider=provider
    )
    try:
        with connect(frontend.address, tracer_provider=provider, timeout=5) as client:
            assert client.unary_unary("/test.Frontend/Relay")(b"ping", timeout=5) == b"ping"
    finally:
        channel.close()
        frontend.stop(grace=1)
        backend.stop(grace=1)
    finished = exporter.get_finished_spans()
    by_kind = {(s.kind, s.name.rsplit("/", 1)[-1]): s for s in finished}
    root = by_kind[(SpanKind.CLIENT, "Relay")]
    front = by_kind[(SpanKind.SERVER, "Relay")]
    hop = by_kind[(SpanKind.CLIENT, "Echo")]
    back = by_kind[(SpanKind.SERVER, "Echo")]
    assert len({s.context.trace_id for s in (root, front, hop, back)}) == 1
    assert front.parent is not None and front.parent.span_id == root.context.span_id
    assert hop.parent is not None and hop.parent.span_id == front.context.span_id
    assert back.parent is not None and back.parent.span_id == hop.context.span_id


def test_spans_are_exported_over_otlp_grpc() -> None:
    with Collector() as collector:
        provider = tracer_provider(
            "posture", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint}
        )
        running = serve.start(
            [generic("test.Backend", {"Echo": lambda request, context: request})],
            listen="127.0.0.1:0",
            tracer_provider=provider,
        )
        try:
            with connect(running.address, timeout=5) as channel:
                channel.unary_unary("/test.Backend/Echo")(b"x", timeout=5)
            running.stop(grace=1)
            assert provider.force_flush(5000)
            assert collector.received.wait(10)
        finally:
            provider.shutdown()
    resource_spans = [rs for r in collector.traces for rs in r.resource_spans]
    names = {
        attribute.value.string_value
        for rs in resource_spans
        for attribute in rs.resource.attributes
        if attribute.key == "service.name"
    }
    assert names == {"parallax-posture"}
    exported = [s.name for rs in resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert "/test.Backend/Echo" in exported
