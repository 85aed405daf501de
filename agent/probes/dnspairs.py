"""Pairs DNS queries with their answers. The kernel copies each query (egress) and each answer
(ingress) as its own DnsQuery record; the agent holds a query, keyed by cgroup, transaction id,
name and type, until its answer arrives and then ships one DnsQuery with both, at the answer's
place in the stream (before any connect to the answered addresses). Unanswered queries leave
with rcode -1 after `timeout` seconds or when the bounded table is full; answers without a held
query leave as they are. Thread-safe: agent.probes.source adds from the consumer thread and
expires from the main loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from parallax.runtime.v1 import event_pb2 as pb

Key = tuple[int, int, str, str]  # cgroup id, transaction id, query name, query type


class DnsPairs:
    """Queries waiting for answers, oldest first."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        limit: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout, self._limit, self._clock = timeout, limit, clock
        self._waiting: dict[Key, tuple[float, pb.Event]] = {}
        self._lock = threading.Lock()
        self.paired = 0
        self.unanswered = 0

    def add(self, event: pb.Event, transaction: int, answer: bool) -> list[pb.Event]:
        """Take one DNS record; return the events ready to ship (none while a query waits)."""
        query = event.dns_query
        key = (event.cgroup_id, transaction, query.query_name, query.query_type)
        with self._lock:
            if not answer:
                out: list[pb.Event] = []
                if key not in self._waiting:  # a retransmission keeps the first query
                    if len(self._waiting) >= self._limit:
                        out.append(self._pop_oldest())
                    self._waiting[key] = (self._clock() + self._timeout, event)
                return out
            held = self._waiting.pop(key, None)
        if held is not None:
            self.paired += 1
            _merge(held[1], event)
        return [event]

    def expire(self, everything: bool = False) -> list[pb.Event]:
        """Queries whose answer did not come in time (all of them with `everything`)."""
        now, out = self._clock(), []
        with self._lock:
            while self._waiting:
                deadline, _ = next(iter(self._waiting.values()))
                if deadline > now and not everything:
                    break
                out.append(self._pop_oldest())
        return out

    def _pop_oldest(self) -> pb.Event:
        key = next(iter(self._waiting))
        self.unanswered += 1
        return self._waiting.pop(key)[1]

    @property
    def waiting(self) -> int:
        """How many queries wait for an answer."""
        return len(self._waiting)


def _merge(query: pb.Event, answer: pb.Event) -> None:
    """Complete `answer` with what only the query knew: the asking process, when the hook had
    it, and the resolver's address as the query addressed it."""
    for name in ("pid", "ppid", "uid", "comm"):
        if not getattr(answer, name) and getattr(query, name):
            setattr(answer, name, getattr(query, name))
    if query.dns_query.server_address:
        answer.dns_query.server_address = query.dns_query.server_address
