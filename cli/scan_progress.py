"""The progress line of an in-process `parallax scan`, drawn on stderr only for a person at a
terminal. rich is imported only then: a piped or CI scan neither shows nor loads it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Update(Protocol):
    """Changes the line's description and/or its count of done items out of `total`."""

    def __call__(
        self, description: str | None = None, *, done: int | None = None, total: int | None = None
    ) -> None: ...


@contextmanager
def progress(description: str) -> Iterator[Update]:
    """A transient progress line starting at `description`; yields its `Update`."""
    if not sys.stderr.isatty():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(
            description: str | None = None, *, done: int | None = None, total: int | None = None
        ) -> None:
            refresh = description is not None
            bar.update(task, description=description, completed=done, total=total, refresh=refresh)

        yield update


def _ignore(
    description: str | None = None, *, done: int | None = None, total: int | None = None
) -> None:
    """The Update of a scan nobody watches."""
