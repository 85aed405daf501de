"""Domain errors raised by pure service code; `servicekit.interceptors` maps each one to its
canonical gRPC status code, so domain modules never import grpc."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable. Raised at start-up,
    never at the RPC boundary."""


class DomainError(Exception):
    """Base of every error a service deliberately reports to its caller."""

    code_name = "UNKNOWN"


class InvalidArgument(DomainError):
    """The request is malformed or names something impossible; retrying will not help."""

    code_name = "INVALID_ARGUMENT"


class NotFound(DomainError):
    """The named resource does not exist."""

    code_name = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource to create exists already."""

    code_name = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation (for example, no profile yet)."""

    code_name = "FAILED_PRECONDITION"


class PermissionDenied(DomainError):
    """The caller is known but may not perform the operation."""

    code_name = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """A size or rate limit was exceeded."""

    code_name = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A dependency is unreachable right now; the caller may retry with backoff."""

    code_name = "UNAVAILABLE"


class Unimplemented(DomainError):
    """The operation is part of the contract but not built yet; the message says what is missing."""

    code_name = "UNIMPLEMENTED"
