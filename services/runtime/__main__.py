"""Composition root of the runtime service: `python -m services.runtime`."""

from __future__ import annotations

import os
import sys
import time

from servicekit import serve, storage
from services.runtime.config import Settings
from services.runtime.engine import Engine
from services.runtime.kubepods import AgentPodSettings, agent_nodes
from services.runtime.otlp import OtlpAlerts, logger_provider
from services.runtime.outputs import JsonLines, Ticker, Webhook
from services.runtime.servicer import RuntimeServicer, registration
from services.runtime.store import RuntimeStore


def main() -> None:
    """Serve the runtime service until SIGTERM."""
    settings = Settings.from_env(os.environ)
    server = settings.server
    url = storage.database_url(server.database_url, server.data_dir, "runtime")
    engine = Engine(RuntimeStore(storage.engine(url)), time.time, settings.learning_window)
    if settings.alerts_stdout:
        engine.subscribe(JsonLines(sys.stdout))
    if settings.webhook_url:
        engine.subscribe(Webhook(settings.webhook_url, settings.webhook_attempts))
    logs = logger_provider(os.environ)
    if logs is not None:
        engine.subscribe(OtlpAlerts(logs))
    agents = agent_nodes(AgentPodSettings.from_env(os.environ), time.monotonic)
    Ticker(engine.tick, settings.tick_seconds).start()
    serve.run(server, lambda provider: [registration(RuntimeServicer(engine, agents))])
    if logs is not None:
        logs.shutdown()  # flushes the alerts still queued


if __name__ == "__main__":
    main()
