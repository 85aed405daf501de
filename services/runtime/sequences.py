"""Which batches of an agent session are stored, for deduplication: every sequence up to a
floor, and the stored ones above it. Agents number batches from 1 and send them in order, so the
floor advances as batches arrive and memory stays small; after a restart, or once old dedupe
records are pruned, every sequence below the lowest stored one reads as stored. Pure; the engine
keeps one per session and drops it when the session has been silent long enough."""

from __future__ import annotations

from collections.abc import Iterable


class Seen:
    """The stored sequences of one agent session, and when its last batch arrived."""

    __slots__ = ("above", "floor", "last_batch")

    def __init__(self, stored: Iterable[int], now: float) -> None:
        self.above = set(stored)
        self.floor = min(self.above) - 1 if self.above else 0
        self.last_batch = now
        self._advance()

    def __contains__(self, sequence: int) -> bool:
        return sequence <= self.floor or sequence in self.above

    def add(self, sequence: int, now: float) -> None:
        """Note that `sequence` is stored."""
        self.above.add(sequence)
        self.last_batch = max(self.last_batch, now)
        self._advance()

    def _advance(self) -> None:
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)
