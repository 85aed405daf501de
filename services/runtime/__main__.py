"""Composition root of the runtime service: `python -m services.runtime`. With a webhook, the
store keeps the outbox (new alerts enqueued with their batch) that the Webhook worker sends."""

from __future__ import annotations

import os
import sys
import time

from servicekit import serve, storage
from services.runtime.config import Settings
from services.runtime.engine import Engine
from services.runtime.kubepods import AgentPodSettings, agent_nodes
from services.runtime.otlp import OtlpAlerts, logger_provider
from services.runtime.outputs import JsonLines, Ticker, Webhook, meter_provider, observe
from services.runtime.servicer import RuntimeServicer, registration
from services.runtime.store import RuntimeStore


def main() -> None:
    """Serve the runtime service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    server = settings.server
    url = storage.database_url(server.database_url, server.data_dir, "runtime")
    store = RuntimeStore(storage.engine(url), outbox=bool(settings.webhook_url))
    engine = Engine(store, time.time, settings.learning_window)
    if settings.alerts_stdout:
        engine.subscribe(JsonLines(sys.stdout))
    hook = Webhook(settings.webhook_url, store) if settings.webhook_url else None
    meters = meter_provider(os.environ) if hook is not None else None
    if hook is not None:
        engine.subscribe(hook)
        if meters is not None:
            observe(meters.get_meter("parallax.runtime.webhook"), hook)
    logs = logger_provider(os.environ)
    if logs is not None:
        engine.subscribe(OtlpAlerts(logs))
    agents = agent_nodes(AgentPodSettings.from_env(os.environ), time.monotonic)
    Ticker(engine.tick, settings.tick_seconds).start()
    serve.run(server, lambda provider: [registration(RuntimeServicer(engine, agents))])
    if hook is not None:
        hook.close()  # what it has not sent stays in the outbox for the next start
    if meters is not None:
        meters.shutdown()
    if logs is not None:
        logs.shutdown()  # flushes the alerts still queued


if __name__ == "__main__":
    main()
