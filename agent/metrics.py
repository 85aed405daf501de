"""The agent's Prometheus metrics: events by type, unattributed events by reason, drops by type
and source, the send buffer's depth, held events, whether sys_enter is attached and batch
outcomes; served over HTTP for scraping. The shipper and the main loop update them; tests read
them from their registry."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from parallax.runtime.v1 import blind_spot_pb2, event_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from agent.attributed import Attributed, attributed
from agent.ship.outbox import DropKey


def _label(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


def type_label(value: int) -> str:
    """An EventType as a label value, for example "exec"."""
    return _label(event_pb2.EventType.Name(value), "EVENT_TYPE_")  # type: ignore[arg-type]


class AgentMetrics:
    """The metrics of one agent process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._lock = threading.Lock()
        self._drops_seen: dict[DropKey, int] = {}

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, labels, registry=self.registry)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, registry=self.registry)

        self.events = counter("parallax_agent_events", "Events read from the kernel.", "type")
        self.unattributed = counter(
            "parallax_agent_unattributed_events",
            "Events shipped without a pod, by why.",
            "type",
            "reason",
        )
        self.drops = counter(
            "parallax_agent_dropped_events", "Events lost, by where.", "type", "source"
        )
        self.buffer_depth = gauge("parallax_agent_buffer_events", "Events not yet acknowledged.")
        self.held = gauge("parallax_agent_held_events", "Events held for attribution.")
        self.sys_enter_attached = gauge(
            "parallax_agent_sys_enter_attached",
            "1 while sys_enter (syscall learning and monitoring) is attached, else 0.",
        )
        self.batches_acked = counter("parallax_agent_batches_acked", "Batches acknowledged.")
        self.batches_resent = counter("parallax_agent_batches_resent", "Batches sent again.")
        self.batches_duplicate = counter(
            "parallax_agent_batches_duplicate", "Batches the runtime already had."
        )
        self.reconnects = counter("parallax_agent_stream_reconnects", "Event streams reopened.")

    def observe(self, events: Attributed | Iterable[event_pb2.Event]) -> None:
        """Count events handed to the shipper, and those among them without a pod."""
        tally = attributed(events).tally()
        by_type: collections.Counter[int] = collections.Counter()
        for (kind, reason), n in tally.items():
            by_type[kind] += n
            if reason:
                name = event_pb2.UnattributedReason.Name(reason)  # type: ignore[arg-type]
                label = _label(name, "UNATTRIBUTED_REASON_")
                self.unattributed.labels(type_label(kind), label).inc(n)
        for known, n in by_type.items():
            self.events.labels(type_label(known)).inc(n)

    def observe_drops(self, totals: Mapping[DropKey, int]) -> None:
        """Advance the drop counters to cumulative `totals`."""
        with self._lock:
            for (kind, source), total in totals.items():
                delta = total - self._drops_seen.get((kind, source), 0)
                if delta > 0:
                    name = blind_spot_pb2.DropSource.Name(source)  # type: ignore[arg-type]
                    self.drops.labels(type_label(kind), _label(name, "DROP_SOURCE_")).inc(delta)
                    self._drops_seen[(kind, source)] = total

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), for tests and `parallax agent status`."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def serve(self, address: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on `address:port` (port 0 picks a free one) in a daemon thread."""
        return start_http_server(port, address, registry=self.registry)
