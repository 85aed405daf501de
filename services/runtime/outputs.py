"""Where new alerts go besides WatchAlerts: JSON lines on a stream (stdout), and an HTTP webhook
posting each new alert with retries and backoff from a background thread, so that a slow
receiver never holds up ingest. Also the ticker that applies learning windows between events."""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from services.runtime.alerts import Alert, to_json
from services.runtime.engine import Change

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000


class JsonLines:
    """Write each new alert as one JSON line (repeats are aggregated, not re-sent)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, changes: list[tuple[Alert, Change]]) -> None:
        lines = [json.dumps(to_json(a)) + "\n" for a, change in changes if change == "added"]
        if lines:
            with self.lock:
                self.stream.writelines(lines)
                self.stream.flush()


class Webhook:
    """POST each new alert as JSON to `url`; retry 5xx, 429 and connection errors with
    exponential backoff up to `attempts` tries; drop (and log) when the queue is full."""

    def __init__(
        self, url: str, attempts: int = 5, backoff: float = 0.2, timeout: float = 5.0
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s), got {url!r}")
        self.url, self.attempts, self.backoff, self.timeout = url, attempts, backoff, timeout
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_LIMIT)
        self.stopping = threading.Event()
        self.delivered = self.failed = 0
        self.thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self.thread.start()

    def __call__(self, changes: list[tuple[Alert, Change]]) -> None:
        for alert, change in changes:
            if change == "added":
                try:
                    self.queue.put_nowait(to_json(alert))
                except queue.Full:
                    log.warning("webhook queue full; dropped alert %s", alert.name)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the queued alerts (retries are cut short)."""
        self.stopping.set()
        self.queue.put(None)
        self.thread.join(timeout)

    def _run(self) -> None:
        while (body := self.queue.get()) is not None:
            if self._deliver(json.dumps(body).encode()):
                self.delivered += 1
            else:
                self.failed += 1
                log.error(
                    "webhook gave up on alert %s after %d attempts", body["name"], self.attempts
                )

    def _deliver(self, payload: bytes) -> bool:
        for attempt in range(self.attempts):
            if attempt and self.stopping.wait(self.backoff * 2 ** (attempt - 1)):
                return False
            # The scheme is checked in __init__: only http(s) reaches urlopen.
            request = urllib.request.Request(  # noqa: S310
                self.url, payload, {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout):  # noqa: S310
                    return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    return False
            except OSError as exc:
                log.warning("webhook attempt %d failed: %s", attempt + 1, exc)
        return False


class Ticker(threading.Thread):
    """Call `tick` every `seconds` until the process ends (a daemon thread)."""

    def __init__(self, tick: Callable[[], object], seconds: float) -> None:
        super().__init__(name="learning-ticker", daemon=True)
        self.tick, self.seconds = tick, seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.seconds):
            try:
                self.tick()
            except Exception:
                log.exception("learning tick failed")
