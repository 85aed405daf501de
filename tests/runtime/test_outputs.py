"""The alert outputs. The webhook against a real local HTTP server on 127.0.0.1:0, fed by a real
store's outbox: transient answers (5xx, 408, 429) and a receiver that comes up late are retried
until delivered, in order; a permanent refusal (4xx) is dropped and counted; repeats of an alert
are not re-sent; the counts are published as metrics. And the JSON form of an alert that
repeated in other pods and nodes: all of them listed (bounded), the latest occurrence beside
the first."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from servicekit import storage
from services.runtime import domain
from services.runtime.alerts import MAX_PLACES, Alert, AlertBook, to_json
from services.runtime.containers import Process
from services.runtime.outputs import Webhook, observe
from services.runtime.queries import AlertFilter, RefFilter
from services.runtime.rules import BY_ID, Detection
from services.runtime.store import Changes, OutboxCounts, RuntimeStore
from tests.processes import eventually
from tests.runtime import builders as b


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1:0 answering `statuses` in turn, then 200. Its port is
    bound at once but it accepts connections (is "up") only from `start` on."""

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server_bind()  # the port is ours; connecting is refused until server_activate
        self.statuses = statuses
        self.bodies: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/alerts"

    def start(self) -> Receiver:
        self.server_activate()
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.server.bodies.put((status, body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(list(getattr(request, "param", [])))
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RuntimeStore]:
    bound = storage.engine(f"sqlite:///{tmp_path / 'runtime.db'}")
    yield RuntimeStore(bound, outbox=True)
    bound.dispose()


@pytest.fixture
def hooks() -> Iterator[Callable[..., Webhook]]:
    made: list[Webhook] = []

    def make(url: str, store: RuntimeStore) -> Webhook:
        made.append(Webhook(url, store, backoff=0.01, cap=0.05, timeout=5))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


def detection(path: str = "/usr/bin/apt-get") -> Detection:
    return Detection(BY_ID["R0011"], path, f"{path} ran", {"path": path})


def occurrence(
    book: AlertBook, found: Detection, pod: str = "cart-1", node: str = "n1", at: float = b.T0
) -> tuple[Alert, bool]:
    """Record one occurrence of `found` in `pod` on `node` and flush it."""
    event = b.event(b.exec_(found.key), at=at, origin=b.origin(pod=pod, node=node))
    tree = (Process(1, 0, "/app/server", (), 0, 0), Process(100, 1, found.key, (), 0, 0))
    book.record(found, event, tree)
    ((alert, new),) = book.flush(at)
    return alert, new


def commit(store: RuntimeStore, alert: Alert, hook: Webhook) -> None:
    """Store `alert` as the engine does, then tell the webhook as the engine's listeners are."""
    store.commit(Changes(alerts=[alert]))
    hook([(alert, "added")])


@pytest.mark.parametrize("receiver", [[503, 500, 429, 408, 200]], indirect=True)
def test_transient_answers_are_retried_until_delivered_and_repeats_not_sent(
    receiver: Receiver, store: RuntimeStore, hooks: Callable[..., Webhook]
) -> None:
    hook = hooks(receiver.start().url, store)
    book = AlertBook()
    alert, _ = occurrence(book, detection())
    commit(store, alert, hook)
    seen = [receiver.bodies.get(timeout=10) for _ in range(5)]
    assert [status for status, _ in seen] == [503, 500, 429, 408, 200]
    assert {body["name"] for _, body in seen} == {alert.name} and seen[-1][1]["count"] == 1
    repeat, new = occurrence(book, detection(), at=b.T0 + 1)
    store.commit(Changes(alerts=[repeat]))
    hook([(repeat, "updated")])
    assert not new and eventually(lambda: hook.counts() == OutboxCounts(1, 0, 0) or None, 10)
    assert receiver.bodies.empty() and store.deliveries(10) == []


def test_a_receiver_that_comes_up_late_gets_the_alerts_in_order(
    receiver: Receiver, store: RuntimeStore, hooks: Callable[..., Webhook]
) -> None:
    hook = hooks(receiver.url, store)
    book = AlertBook()
    alerts = [occurrence(book, detection(f"/usr/bin/apt-{n}"))[0] for n in range(3)]
    for alert in alerts:
        commit(store, alert, hook)
    eventually(lambda: hook.attempts >= 3 or None, 10)  # connections refused meanwhile
    assert hook.counts() == OutboxCounts(0, 3, 0)
    receiver.start()
    names = [receiver.bodies.get(timeout=10)[1]["name"] for _ in alerts]
    assert names == [a.name for a in alerts]
    assert eventually(lambda: hook.counts() == OutboxCounts(3, 0, 0) or None, 10)


@pytest.mark.parametrize("receiver", [[400, 503]], indirect=True)
def test_a_permanent_refusal_is_dropped_counted_and_logged(
    receiver: Receiver,
    store: RuntimeStore,
    hooks: Callable[..., Webhook],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = hooks(receiver.start().url, store)
    book = AlertBook()
    refused, delivered = (occurrence(book, detection(p))[0] for p in ("/bin/apk", "/bin/yum"))
    with caplog.at_level(logging.ERROR, "services.runtime.outputs"):
        commit(store, refused, hook)
        commit(store, delivered, hook)
        seen = [receiver.bodies.get(timeout=10) for _ in range(3)]
        eventually(lambda: hook.counts() == OutboxCounts(1, 0, 1) or None, 10)
    assert [(status, body["name"]) for status, body in seen] == [
        (400, refused.name),
        (503, delivered.name),
        (200, delivered.name),
    ]
    assert any(
        "HTTP 400" in r.getMessage() and refused.id in r.getMessage() for r in caplog.records
    )


def test_the_backoff_doubles_up_to_its_cap_or_the_receivers_retry_after(
    store: RuntimeStore,
) -> None:
    hook = Webhook("http://127.0.0.1:9/alerts", store, backoff=0.5, cap=30)
    hook.close()
    assert [hook._delay(n, None) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert (hook._delay(1, 3.0), hook._delay(2, 120.0)) == (3.0, 30)


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
def test_the_counts_are_metrics(
    receiver: Receiver, store: RuntimeStore, hooks: Callable[..., Webhook]
) -> None:
    hook = hooks(receiver.start().url, store)
    book = AlertBook()
    for path in ("/bin/apk", "/bin/yum"):
        commit(store, occurrence(book, detection(path))[0], hook)
    eventually(lambda: hook.counts() == OutboxCounts(1, 0, 1) or None, 10)
    reader = InMemoryMetricReader()
    observe(MeterProvider(metric_readers=[reader]).get_meter("test"), hook)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        (metric.name, point.attributes.get("outcome") if point.attributes else None): point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points  # type: ignore[union-attr]
    }
    assert points == {
        ("parallax.runtime.webhook.alerts", "delivered"): 1,
        ("parallax.runtime.webhook.alerts", "failed"): 1,
        ("parallax.runtime.webhook.pending", None): 0,
    }


def test_the_webhook_refuses_other_schemes_and_a_store_without_outbox(tmp_path: Path) -> None:
    bound = storage.engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with pytest.raises(ValueError, match="http"):
        Webhook("file:///etc/passwd", RuntimeStore(bound, outbox=True))
    with pytest.raises(ValueError, match="outbox"):
        Webhook("http://127.0.0.1:9/alerts", RuntimeStore(bound))
    bound.dispose()


def test_json_names_every_pod_and_node_and_the_latest_occurrence() -> None:
    book = AlertBook()
    first, _ = occurrence(book, detection(), pod="cart-1", node="n1")
    later, new = occurrence(book, detection(), pod="cart-7", node="n9", at=b.T0 + 3600)
    body = to_json(later)
    assert not new and body["count"] == 2 and body["name"] == first.name
    assert (body["workload"]["pod"], body["node"]) == ("cart-1", "n1")
    assert (body["podNames"], body["nodeNames"]) == (["cart-1", "cart-7"], ["n1", "n9"])
    latest = body["latestOccurrence"]
    assert (latest["pod"], latest["podUid"], latest["node"]) == ("cart-7", "uid-cart-7", "n9")
    assert [p["path"] for p in latest["processTree"]] == ["/app/server", "/usr/bin/apt-get"]
    assert (body["firstSeenTime"], body["lastSeenTime"]) == (
        "2026-09-21T14:13:20Z",
        "2026-09-21T15:13:20Z",
    )


def test_a_pod_filter_finds_an_alert_that_repeated_in_that_pod() -> None:
    book = AlertBook()
    occurrence(book, detection(), pod="cart-1", node="n1")
    alert, _ = occurrence(book, detection(), pod="cart-7", node="n9", at=b.T0 + 3600)
    assert AlertFilter(RefFilter(pod="cart-7")).matches(alert)
    assert AlertFilter(RefFilter(pod="cart-1")).matches(alert)
    assert not AlertFilter(RefFilter(pod="cart-9")).matches(alert)


def test_pods_and_nodes_are_bounded_and_a_late_backlog_is_not_the_latest() -> None:
    book = AlertBook()
    found = detection()
    for n in range(MAX_PLACES + 5):
        event = b.event(b.exec_(found.key), at=b.T0 + n, origin=b.origin(f"cart-{n}", node=f"n{n}"))
        book.record(found, event, ())
    ((alert, _),) = book.flush(b.T0)
    assert alert.count == MAX_PLACES + 5 and len(alert.pods) == len(alert.nodes) == MAX_PLACES
    assert alert.pods[0] == "cart-0" and alert.latest.pod == f"cart-{MAX_PLACES + 4}"
    stale, _ = occurrence(book, found, pod="cart-old", node="n-old", at=b.T0 - 60)
    assert stale.latest == alert.latest and stale.pods == alert.pods
    assert domain.container_path(stale.latest) == domain.container_path(stale.origin)
