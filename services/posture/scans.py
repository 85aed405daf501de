"""Runs posture scans for the service: loads manifests or lists a cluster, evaluates every
control, stores the result with its history, and tells watchers when a scan finishes. Called
by the servicer; it knows nothing of gRPC."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace

from servicekit.errors import FailedPrecondition
from services.posture import loader, rules
from services.posture.domain import Manifest, ScanError, ScanReport
from services.posture.history import ScanRecord, ScanState, source_key
from services.posture.store import PostureStore
from services.posture.suppress import SuppressionConfig

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Listener = Callable[[ScanRecord], None]
ClusterLister = Callable[["ClusterRequest"], tuple[str, list[Manifest], list[ScanError]]]


@dataclass(frozen=True)
class ClusterRequest:
    """Which cluster to scan: a kubeconfig context or the in-cluster service account."""

    context: str = ""
    in_cluster: bool = False
    cluster_name: str = ""
    namespaces: tuple[str, ...] = ()


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class Scanner:
    """Creates scans, runs them (inline or on a worker thread) and notifies listeners."""

    def __init__(
        self,
        store: PostureStore,
        *,
        cluster_lister: ClusterLister | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.cluster_lister = cluster_lister
        self.clock = clock
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every finished scan; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.remove(listener)

        return unsubscribe

    def scan_manifests(
        self,
        documents: Sequence[tuple[str, bytes]],
        *,
        frameworks: Collection[str] = (),
        suppressions: SuppressionConfig | None = None,
        wait: bool = True,
    ) -> ScanRecord:
        """Scan inline manifests given as (uri, content) pairs."""
        uris = [uri for uri, _ in documents]
        description = f"{len(documents)} manifest file(s): " + ", ".join(uris[:3])
        record = self._create(source_key(uris), description, frameworks)

        def load() -> tuple[list[Manifest], list[ScanError]]:
            manifests: list[Manifest] = []
            errors: list[ScanError] = []
            for uri, content in documents:
                found, problems = loader.load_text(content, uri)
                manifests += found
                errors += problems
            return manifests, errors

        return self._run(record, load, frameworks, suppressions, wait)

    def scan_cluster(
        self,
        target: ClusterRequest,
        *,
        frameworks: Collection[str] = (),
        suppressions: SuppressionConfig | None = None,
        wait: bool = True,
    ) -> ScanRecord:
        """Scan a live cluster through the Kubernetes API."""
        lister = self.cluster_lister
        if lister is None:
            raise FailedPrecondition("this posture service has no cluster access configured")
        name = target.cluster_name or target.context or "in-cluster"
        record = self._create(f"cluster://{name}", f"cluster {name}", frameworks)

        def load() -> tuple[list[Manifest], list[ScanError]]:
            _, manifests, errors = lister(target)
            return manifests, errors

        return self._run(record, load, frameworks, suppressions, wait)

    def _create(self, key: str, description: str, frameworks: Collection[str]) -> ScanRecord:
        record = ScanRecord(
            id=uuid.uuid4().hex[:16],
            source_key=key,
            description=description,
            state=ScanState.RUNNING,
            create_time=self.clock(),
            frameworks=tuple(frameworks),
        )
        self.store.create_scan(record)
        return record

    def _run(
        self,
        record: ScanRecord,
        load: Callable[[], tuple[list[Manifest], list[ScanError]]],
        frameworks: Collection[str],
        suppressions: SuppressionConfig | None,
        wait: bool,
    ) -> ScanRecord:
        def work() -> ScanRecord:
            with tracer.start_as_current_span("posture.scan") as span:
                span.set_attribute("parallax.scan", record.name)
                try:
                    manifests, errors = load()
                    report = rules.evaluate(
                        manifests, frameworks=frameworks, suppressions=suppressions
                    )
                    report = ScanReport(
                        report.findings,
                        tuple(errors) + report.errors,
                        report.objects_scanned,
                        report.objects_ignored,
                    )
                    done = self.store.complete_scan(record.id, report, self.clock())
                except Exception as exc:
                    log.exception("scan %s failed", record.name)
                    done = self.store.fail_scan(record.id, f"scan failed: {exc}", self.clock())
                span.set_attribute("parallax.findings", sum(done.severity_counts.values()))
            self._notify(done)
            return done

        if wait:
            return work()
        threading.Thread(target=work, name=f"scan-{record.id}", daemon=True).start()
        return record

    def _notify(self, record: ScanRecord) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(record)
