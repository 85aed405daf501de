"""Where new alerts go besides WatchAlerts: JSON lines on a stream (stdout), and an HTTP webhook
fed by the store's durable outbox (store.py: a new alert is enqueued in the transaction that
stores it, before its batch is acknowledged). The webhook's worker thread POSTs the outbox in
order, retrying transient failures (5xx, 408, 429, connection errors, timeouts) with capped
exponential backoff for as long as the service runs, and drops an alert only when the receiver
refuses it for good (another 4xx); what is still waiting at exit is sent after the restart.
Delivery is at least once: a crash between a receiver's answer and the outbox update sends that
alert again, so receivers dedupe by the alert's name. Also the webhook's OpenTelemetry metrics
and the ticker that applies learning windows between events."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from email.message import Message
from http.client import HTTPException
from typing import Any, TextIO

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider

from servicekit.telemetry import otlp_endpoint
from services.runtime.alerts import Alert, to_json
from services.runtime.engine import Change
from services.runtime.store import Delivery, OutboxCounts, RuntimeStore

log = logging.getLogger(__name__)
BATCH = 100  # outbox rows read at a time
IDLE_POLL = 30.0  # seconds between outbox reads when no commit wakes the worker
TRANSIENT = frozenset({408, 429})  # 4xx answers that mean "later", not "never"


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Answer a redirect with its HTTPError: following it would turn the POST into a GET."""

    def redirect_request(self, *args: Any) -> None:
        return None


class Webhook:
    """POST the new alerts of `store`'s outbox as JSON to `url`, in order, from a background
    thread; a listener of the engine only to wake the thread after a commit. Waits `backoff`
    seconds after the first failure of an alert, doubling up to `cap` (or the receiver's
    Retry-After, up to `cap`); `timeout` bounds each request."""

    def __init__(
        self,
        url: str,
        store: RuntimeStore,
        backoff: float = 0.5,
        cap: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s), got {url!r}")
        if not store.outbox:
            raise ValueError("the webhook needs a store created with outbox=True")
        self.url, self.store = url, store
        self.backoff, self.cap, self.timeout = backoff, cap, timeout
        self.opener = urllib.request.build_opener(_NoRedirect)
        self.attempts = 0  # POSTs tried since start, for tests and logs
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self.thread.start()

    def __call__(self, changes: list[tuple[Alert, Change]]) -> None:
        if any(change == "added" for _, change in changes):
            self.wake.set()

    def counts(self) -> OutboxCounts:
        """Return the alerts delivered, waiting and failed (kept in the store)."""
        return self.store.outbox_counts()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; what it has not delivered stays in the outbox for the next start."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                waiting = self.store.deliveries(BATCH)
                for delivery in waiting:
                    if not self._deliver(delivery):
                        return
                failures = 0
            except Exception:  # the database, not the receiver: try again, never die
                log.exception("webhook outbox unavailable")
                failures += 1
                waiting = []
                if self.stopping.wait(self._delay(failures, None)):
                    return
            if not waiting:
                self.wake.wait(IDLE_POLL)

    def _deliver(self, delivery: Delivery) -> bool:
        """Send one alert until it is delivered or refused for good; False when stopping."""
        failures = 0
        while True:
            status, detail, retry_after = self._post(delivery.payload)
            self.attempts += 1
            if 200 <= status < 300 or _permanent(status):
                self.store.finish_delivery(delivery.position, delivered=status < 300)
                if status >= 300:
                    log.error(
                        "webhook refused alert %s with HTTP %d; dropped: %s",
                        delivery.alert_id, status, detail,
                    )  # fmt: skip
                elif failures:
                    log.info(
                        "webhook delivered alert %s after %d failures", delivery.alert_id, failures
                    )
                return True
            failures += 1
            delay = self._delay(failures, retry_after)
            log.warning(
                "webhook attempt %d for alert %s failed (%s); next in %.1fs",
                failures, delivery.alert_id, detail, delay,
            )  # fmt: skip
            if self.stopping.wait(delay):
                return False

    def _delay(self, failures: int, retry_after: float | None) -> float:
        delay = self.backoff * (1 << min(failures - 1, 30))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cap)

    def _post(self, payload: bytes) -> tuple[int, str, float | None]:
        """POST `payload` once; return the HTTP status (0 when no answer came), what went
        wrong, and the receiver's Retry-After in seconds if it gave one."""
        # The scheme is checked in __init__: only http(s) reaches the opener.
        request = urllib.request.Request(  # noqa: S310
            self.url, payload, {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with self.opener.open(request, timeout=self.timeout) as answer:
                return answer.status, "", None
        except urllib.error.HTTPError as error:
            return error.code, f"HTTP {error.code} {error.reason}", _retry_after(error.headers)
        except (OSError, HTTPException) as error:  # refused, reset, timed out, garbled
            return 0, f"{type(error).__name__}: {error}", None


def _permanent(status: int) -> bool:
    """Return True for answers that retrying cannot change: 4xx but 408 and 429."""
    return 400 <= status < 500 and status not in TRANSIENT


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not isinstance(value, str) or not value.strip().isdigit():
        return None  # an HTTP date is rare from webhooks; the backoff applies then
    return float(value.strip())


def observe(meter: Meter, hook: Webhook) -> None:
    """Publish the webhook's figures: parallax.runtime.webhook.alerts (a counter with
    outcome=delivered or failed) and parallax.runtime.webhook.pending (a gauge)."""

    def totals(options: CallbackOptions) -> Iterable[Observation]:
        counts = hook.counts()
        yield Observation(counts.delivered, {"outcome": "delivered"})
        yield Observation(counts.failed, {"outcome": "failed"})

    def pending(options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(hook.counts().pending)

    meter.create_observable_counter(
        "parallax.runtime.webhook.alerts",
        [totals],
        unit="{alert}",
        description="Alerts the webhook delivered, or dropped on a permanent 4xx answer.",
    )
    meter.create_observable_gauge(
        "parallax.runtime.webhook.pending",
        [pending],
        unit="{alert}",
        description="Alerts waiting in the webhook outbox.",
    )


def meter_provider(env: Mapping[str, str]) -> MeterProvider | None:
    """Return a provider exporting metrics over OTLP/gRPC, or None when no endpoint is
    configured or OTEL_METRICS_EXPORTER is not `otlp` (the standard OTEL_* variables)."""
    found = otlp_endpoint(env, "metrics")
    if found is None:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    endpoint, insecure = found
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=insecure))
    name = env.get("OTEL_SERVICE_NAME") or "parallax-runtime"
    return MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": name}))


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
