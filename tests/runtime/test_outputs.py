"""The alert webhook against a real local HTTP server on 127.0.0.1:0: a failing receiver is
retried with backoff until it accepts, repeats of an alert are not re-sent, and a receiver that
rejects the request (4xx) is not retried."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.runtime import domain
from services.runtime.alerts import AlertBook
from services.runtime.outputs import Webhook
from services.runtime.rules import BY_ID, Detection
from tests.runtime import builders as b


class Receiver(ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = statuses
        self.bodies: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()


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
    server = Receiver(list(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def changes(count: int) -> list[tuple[Any, Any]]:
    book = AlertBook()
    event = b.event(b.exec_("/usr/bin/apt-get"))
    detection = Detection(
        BY_ID["R0011"], "/usr/bin/apt-get", "apt-get ran", {"path": "/usr/bin/apt-get"}
    )
    book.record(detection, event, ())
    ((alert, _),) = book.flush(b.T0)
    result: list[tuple[Any, Any]] = [(alert, "added")]
    for _ in range(count - 1):
        book.record(detection, event, ())
        ((again, _),) = book.flush(b.T0)
        result.append((again, "updated"))
    return result


@pytest.mark.parametrize("receiver", [[503, 500, 200]], indirect=True)
def test_webhook_retries_until_delivered_and_skips_repeats(receiver: Receiver) -> None:
    hook = Webhook(f"http://127.0.0.1:{receiver.server_port}/alerts", attempts=5, backoff=0.01)
    hook(changes(3))
    seen = [receiver.bodies.get(timeout=10) for _ in range(3)]
    hook.close()
    assert [status for status, _ in seen] == [503, 500, 200]
    assert seen[-1][1]["ruleId"] == "R0011" and seen[-1][1]["count"] == 1
    assert receiver.bodies.empty() and (hook.delivered, hook.failed) == (1, 0)


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
def test_webhook_does_not_retry_a_rejection(receiver: Receiver) -> None:
    hook = Webhook(f"http://127.0.0.1:{receiver.server_port}/alerts", attempts=5, backoff=0.01)
    hook(changes(1))
    status, _ = receiver.bodies.get(timeout=10)
    hook.close()
    assert status == 400 and receiver.bodies.empty() and hook.failed == 1


def test_webhook_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="http"):
        Webhook("file:///etc/passwd")
    assert domain.Severity.HIGH > domain.Severity.LOW
