"""Garbage-collector settings for the long-running services.

Services allocate many short-lived objects per request and keep large caches (the runtime's
translations, profiles and alerts). With the default thresholds (700, 10, 10) the collector's
older generations walk those caches over and over: 25-30% of the runtime's ingest CPU in
bench/runtime_ingest.py. Rarer collections of the older generations still collect cycles. (The
agent was measured too: no difference, so it keeps the defaults.)"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 100, 100)


def tune_collector() -> None:
    """Move what start-up built out of the collector's way and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
