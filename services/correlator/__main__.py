"""Composition root of the correlator service: `python -m services.correlator`."""

from __future__ import annotations

import os
import time

from opentelemetry.sdk.trace import TracerProvider

from servicekit import serve, storage
from services.correlator.config import Settings
from services.correlator.correlate import Correlator
from services.correlator.feed import Feed
from services.correlator.loop import FeedbackLoop
from services.correlator.manifests import Manifests
from services.correlator.policies import Policies
from services.correlator.servicer import CorrelatorServicer, registration
from services.correlator.store import CorrelatorStore
from services.correlator.upstream import Upstreams


def main() -> None:
    """Serve the correlator and run its feedback loop until SIGTERM."""
    settings = Settings.from_env(os.environ)
    tls = settings.server.tls
    url = storage.database_url(settings.server.database_url, settings.server.data_dir, "correlator")
    store = CorrelatorStore(storage.engine(url))

    def build(provider: TracerProvider) -> list[serve.Registration]:
        upstreams = Upstreams(
            (settings.posture_address, settings.runtime_address, settings.policygen_address),
            tls.channel_credentials() if tls else None,
            settings.upstream_timeout,
            provider,
            settings.verify_timeout,
        )
        correlator = Correlator(upstreams, store, Manifests(settings.manifest_root))
        feed = Feed(correlator, time.time)
        loop = FeedbackLoop(
            correlator,
            Policies(upstreams, time.time, settings.verify_run_seconds),
            feed,
            time.time,
            settings.loop_seconds,
        )
        loop.start()
        return [registration(CorrelatorServicer(correlator, feed, time.time))]

    serve.run(settings.server, build)


if __name__ == "__main__":
    main()
