"""Test support: a real posture server on 127.0.0.1:0 over a SQLite file, with the production
interceptor chain, for the servicer, CLI and other-language tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from servicekit import serve, storage
from services.posture.scans import Scanner
from services.posture.servicer import PostureServicer, registration
from services.posture.store import PostureStore


@contextmanager
def posture_server(
    directory: Path, provider: TracerProvider | None = None
) -> Iterator[serve.RunningServer]:
    """Start a posture server whose database lives in `directory`; stop it afterwards."""
    bound = storage.engine(f"sqlite:///{directory / 'posture.db'}")
    store = PostureStore(bound)
    servicer = PostureServicer(store, Scanner(store))
    running = serve.start(
        [registration(servicer)], listen="127.0.0.1:0", tracer_provider=provider or TracerProvider()
    )
    try:
        yield running
    finally:
        running.stop(grace=1)
        bound.dispose()
