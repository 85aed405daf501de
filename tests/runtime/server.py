"""Test support: a real runtime server on 127.0.0.1:0 over a SQLite file, with the production
interceptor chain and an injectable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from servicekit import serve, storage
from services.runtime.engine import Engine
from services.runtime.servicer import RuntimeServicer, registration
from services.runtime.store import RuntimeStore


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextmanager
def runtime_server(
    directory: Path, clock: Callable[[], float], window: float = 3600.0
) -> Iterator[tuple[serve.RunningServer, Engine]]:
    """Start a runtime server whose database lives in `directory`; stop it afterwards."""
    bound = storage.engine(f"sqlite:///{directory / 'runtime.db'}")
    core = Engine(RuntimeStore(bound), clock, default_window=window)
    running = serve.start(
        [registration(RuntimeServicer(core))],
        listen="127.0.0.1:0",
        tracer_provider=TracerProvider(),
    )
    try:
        yield running, core
    finally:
        running.stop(grace=1)
        bound.dispose()
