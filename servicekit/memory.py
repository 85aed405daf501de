"""Garbage-collector settings for the long-running services.

Services allocate many short-lived objects per request and keep large caches (the runtime's
translations, profiles and alerts). With the default thresholds (700, 10, 10) the collector's
older generations walk those caches over and over: 25-30% of the runtime's ingest CPU in
bench/runtime_ingest.py. Rarer collections of the older generations still collect cycles. (The
agent was measured too: no difference, so it keeps the defaults.)

A service whose work comes in large units (the runtime's batches of thousands of events) also
uses `Settler`: after each unit, what survived it moves out of the collector's sight, so that
collections walk only the objects of the unit in progress, and a full collection on a timer
reclaims any cycles that moved with them."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GC_THRESHOLDS = (5_000, 100, 100)
FULL_EVERY = 900.0  # seconds between the Settler's full collections


def tune_collector() -> None:
    """Move what start-up built out of the collector's way and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Settler:
    """Run each unit of work in `unit()` (or call `settle()` after it). While a unit runs the
    collector is off: what a unit allocates is young, and collecting it mid-unit walks objects
    that reference counting frees at the unit's end, or that settling freezes (about 3% of the
    runtime's ingest CPU in process). Settling freezes what is alive (gc.freeze: the survivors
    join the permanent generation, which collections skip; garbage among them is still freed by
    reference counting), and every `full_every` seconds of `clock` it thaws everything and runs
    a full collection first, so cyclic garbage lives at most that long. That collection walks
    the whole heap: 0.3 s with 400k objects in the runtime's caches, once per `full_every`.
    (The runtime's ingest leaves no cyclic garbage: 0 found after 60 batches of
    bench/runtime_ingest.py; the collection is for whatever else might.) Safe to use from
    several threads: the collector is back on when no unit runs."""

    def __init__(self, clock: Callable[[], float], full_every: float = FULL_EVERY) -> None:
        self.clock, self.full_every = clock, full_every
        self.last_full = clock()
        self.full_collections = 0
        self._lock = threading.Lock()
        self._running = 0  # units in progress, on any thread

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Run one unit of work with automatic collection off (until no unit runs), then
        settle."""
        with self._lock:
            self._running += 1
            if self._running == 1:
                gc.disable()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    gc.enable()
            self.settle()

    def settle(self) -> None:
        """Freeze the survivors of the unit just done; collect fully when one is due."""
        now = self.clock()
        if now - self.last_full >= self.full_every:
            with self._lock:
                if now - self.last_full >= self.full_every:
                    self.last_full = now
                    self.full_collections += 1
                    gc.unfreeze()
                    gc.collect()
        gc.freeze()
