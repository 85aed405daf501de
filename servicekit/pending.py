"""Contract methods that a service does not implement yet answer UNIMPLEMENTED with a message
naming what is missing, instead of grpc's anonymous "Method not implemented!"."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from servicekit.errors import Unimplemented


def _raiser(service: str, method: str, missing: str) -> Callable[..., NoReturn]:
    def method_not_built(self: Any, request: Any, context: Any) -> NoReturn:
        raise Unimplemented(f"{service}.{method} is not implemented yet: {missing}")

    method_not_built.__name__ = method
    return method_not_built


def with_pending(base: type[Any], service: str, missing: Mapping[str, str]) -> type[Any]:
    """Return a subclass of `base` whose `missing` methods raise Unimplemented(reason)."""
    methods = {name: _raiser(service, name, reason) for name, reason in missing.items()}
    return type(base.__name__, (base,), methods)
