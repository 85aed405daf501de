"""Authorization by the role in the caller's client certificate: one server interceptor checks
each RPC against the service's policy before the handler runs, answering PERMISSION_DENIED.
Handlers that need the caller (the runtime checks an agent's node or pod) call
`identity(context)`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from servicekit import pki

AGENT, READER, OPERATOR, CORRELATOR, ADMIN = "agent", "reader", "operator", "correlator", "admin"
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
_READ_PREFIXES = ("Get", "List", "Watch", "Export")
_COMPUTE_PREFIXES = ("Generate", "Verify")


@dataclass(frozen=True)
class Identity:
    """Who is calling: the certificate's common name, its roles and, for agents, its node or
    the pod it was issued to (csi-driver certificates, which cannot name a node)."""

    name: str
    roles: frozenset[str]
    node: str = ""
    pod: pki.PodRef | None = None


@functools.lru_cache(maxsize=256)
def _parse(certificate_pem: bytes) -> Identity:
    claims = pki.claims_of(certificate_pem)
    return Identity(claims.name, claims.roles, claims.node, claims.pod)


def identity(context: grpc.ServicerContext) -> Identity | None:
    """The verified caller of this RPC, or None on a plaintext (insecure) server."""
    certificates = context.auth_context().get("x509_pem_cert")
    return _parse(certificates[0]) if certificates else None


def default_roles(method: str) -> frozenset[str]:
    """The roles allowed to call `method` (short name) unless a service's policy says otherwise:
    reads for readers, policy computations for the correlator and operators, the rest for
    operators. Admins may call anything."""
    if method.startswith(_READ_PREFIXES):
        return frozenset({READER, OPERATOR, CORRELATOR, ADMIN})
    if method.startswith(_COMPUTE_PREFIXES):
        return frozenset({OPERATOR, CORRELATOR, ADMIN})
    return frozenset({OPERATOR, ADMIN})


@dataclass(frozen=True)
class Policy:
    """Which roles may call which method; `overrides` maps short method names to roles."""

    overrides: Mapping[str, Collection[str]]

    def allowed(self, full_method: str) -> frozenset[str] | None:
        """Roles allowed for `/pkg.Service/Method`; None means any authenticated caller."""
        if full_method.startswith(_OPEN_SERVICES):
            return None
        method = full_method.rsplit("/", 1)[-1]
        if method in self.overrides:
            return frozenset(self.overrides[method]) | {ADMIN}
        return default_roles(method)


class AuthorizationInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuse, with PERMISSION_DENIED, callers whose certificate lacks an allowed role."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(details)
        allowed = self.policy.allowed(details.method)
        if handler is None or allowed is None:
            return handler
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                guarded = _guard(behaviour, allowed, details.method, kind.endswith("stream"))
                return handler._replace(**{kind: guarded})
        return handler


def _guard(
    behaviour: Callable[..., Any], allowed: frozenset[str], method: str, streaming: bool
) -> Callable[..., Any]:
    def check(context: grpc.ServicerContext) -> None:
        caller = identity(context)
        if caller is not None and not caller.roles & allowed:
            roles = ", ".join(sorted(caller.roles)) or "none"
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.name} (roles: {roles}) may not call {method}; "
                f"it needs one of: {', '.join(sorted(allowed))}",
            )

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        check(context)
        return behaviour(request, context)

    def stream(request: Any, context: grpc.ServicerContext) -> Any:
        check(context)
        yield from behaviour(request, context)

    return stream if streaming else unary
