"""The one server interceptor that turns exceptions into canonical status codes: domain errors
keep their message, upstream outages become UNAVAILABLE, and anything unexpected is logged with
its traceback, recorded on the span, and answered as INTERNAL without details."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from opentelemetry import trace

from servicekit.errors import DomainError

log = logging.getLogger(__name__)

_UPSTREAM_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _already_aborted(context: grpc.ServicerContext) -> bool:
    code = getattr(context, "code", None)
    current = code() if callable(code) else code
    return current is not None and current != grpc.StatusCode.OK


def _abort(exc: BaseException, context: grpc.ServicerContext, method: str) -> NoReturn:
    if isinstance(exc, DomainError):
        context.abort(grpc.StatusCode[exc.code_name], str(exc))
    upstream = isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call)
    if upstream and exc.code() in _UPSTREAM_RETRYABLE:  # type: ignore[attr-defined]
        context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"an upstream service is unavailable: {exc.details()}",  # type: ignore[attr-defined]
        )
    span = trace.get_current_span()
    span.record_exception(exc)
    trace_id = format(span.get_span_context().trace_id, "032x")
    log.error("unexpected error in %s", method, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (trace {trace_id}); see server logs")
    raise AssertionError("unreachable")  # pragma: no cover


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Map exceptions escaping a handler to status codes, for all four RPC shapes."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary, method))  # type: ignore[attr-defined, no-any-return]
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary, method))  # type: ignore[attr-defined, no-any-return]
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, method))  # type: ignore[attr-defined, no-any-return]
        if handler.stream_stream:
            return handler._replace(stream_stream=_streaming(handler.stream_stream, method))  # type: ignore[attr-defined, no-any-return]
        return handler


def _unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(exc, context, method)

    return wrapped


def _streaming(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as exc:
            if _already_aborted(context):
                raise
            _abort(exc, context, method)

    return wrapped
