"""The feedback loop: two passes, each in a background thread of its own. The incident pass
(quick) turns runtime alerts into incidents and refreshes in-use vulnerability verdicts; the
policy pass (slow: policygen runs entrypoints to verify seccomp profiles) records recommendations
for workloads whose profiles reached COMPLETE, re-evaluates them when a new posture scan arrives,
marks them STALE on behaviour after COMPLETE and produces verified successors for review. Each
pass is one trace across the services and takes its own snapshot, so an alert never waits for
policy work. Runtime's WatchAlerts wakes both early; `refresh()`, `recommend()` and `run_once()`
drive them in tests."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
from opentelemetry import trace

from services.correlator import recommendations as rec
from services.correlator import wire
from services.correlator.augment import with_alerts
from services.correlator.correlate import Correlator, Snapshot
from services.correlator.domain import Workload
from services.correlator.feed import Feed
from services.correlator.policies import Policies, succeed
from services.correlator.store import CorrelatorStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("parallax.correlator")
S = rec.State
# Seconds one WatchAlerts stream lasts before it is opened again (it then resends open alerts).
WATCH_SECONDS = 300.0


class FeedbackLoop:
    """Keeps recommendations, incidents and vulnerability verdicts current."""

    def __init__(
        self,
        correlator: Correlator,
        policies: Policies,
        feed: Feed,
        clock: Callable[[], float],
        interval: float,
    ) -> None:
        self.correlator, self.policies, self.feed = correlator, policies, feed
        self.store: CorrelatorStore = correlator.store
        self.clock, self.interval = clock, interval
        self.last_scan: str | None = None
        self.wakes = {"incidents": threading.Event(), "policies": threading.Event()}
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def run_once(self) -> str:
        """The incident pass, then the policy pass; returns the policy pass's trace id (hex)."""
        self.refresh()
        return self.recommend()

    def refresh(self) -> str:
        """The incident pass: incidents from the open alerts, and vulnerability verdicts; returns
        its trace id (hex)."""
        with tracer.start_as_current_span("correlator.incident_pass") as span:
            self.feed.refresh(self.correlator.snapshot())
            return format(span.get_span_context().trace_id, "032x")

    def recommend(self) -> str:
        """The policy pass: generate, re-evaluate and supersede recommendations; returns its trace
        id (hex)."""
        with tracer.start_as_current_span("correlator.feedback_iteration") as span:
            snap = self.correlator.snapshot()
            self._scan_changed(snap)
            for workload in sorted(snap.profiles):
                self._complete(snap, workload)
            self._stale(snap)
            return format(span.get_span_context().trace_id, "032x")

    def _current(self, workload: Workload) -> list[rec.Recommendation]:
        found = self.store.recommendations(workload.namespace)
        return [r for r in found if r.workload == workload and r.state is S.CURRENT]

    def _findings(self, snap: Snapshot, workload: Workload) -> list[Any]:
        return [wire.finding(m) for m in snap.findings.get(workload, [])]

    def _basis(self, snap: Snapshot, workload: Workload) -> str:
        prints = sorted(f.fingerprint for f in self._findings(snap, workload))
        return hashlib.sha256("\n".join(prints).encode()).hexdigest()[:16]

    def _complete(self, snap: Snapshot, workload: Workload) -> None:
        profiles = snap.profiles[workload]
        if not profiles or any(p.state != 2 for p in profiles):
            return
        if any(r.workload == workload for r in self.store.recommendations(workload.namespace)):
            return
        with tracer.start_as_current_span("correlator.recommend") as span:
            span.set_attribute("parallax.workload", workload.key)
            for made in self._generate(
                snap, workload, (rec.Kind.SECCOMP, rec.Kind.NETWORK_POLICY, rec.Kind.HARDENING), {}
            ):
                self.store.put_recommendation(made)

    def _generate(
        self,
        snap: Snapshot,
        workload: Workload,
        kinds: tuple[rec.Kind, ...],
        alerts: dict[str, list[Any]],
    ) -> list[rec.Recommendation]:
        """Fresh recommendations of `kinds` from the profiles plus the open alerts' behaviour."""
        open_alerts = [a for a in snap.alerts.get(workload, [])] if alerts else []
        profiles = [with_alerts(p, open_alerts) for p in snap.profiles[workload]]
        findings = self._findings(snap, workload)
        basis = self._basis(snap, workload)
        made: list[rec.Recommendation] = []
        if rec.Kind.SECCOMP in kinds:
            wanted = alerts.get("containers") or [p.workload.container for p in profiles]
            made += [
                self.policies.seccomp(workload, p, findings)
                for p in profiles
                if p.workload.container in wanted
            ]
        if rec.Kind.NETWORK_POLICY in kinds:
            policy = self.policies.network_policy(workload, profiles, snap.files, findings)
            made += [policy] if policy else []
        if rec.Kind.HARDENING in kinds:
            seccomp = [r for r in made if r.kind is rec.Kind.SECCOMP] or [
                r for r in self._current(workload) if r.kind is rec.Kind.SECCOMP
            ]
            made.append(self.policies.hardening(workload, profiles, snap.files, findings, seccomp))
        return [replace(m, basis=basis) for m in made]

    def _stale(self, snap: Snapshot) -> None:
        """Behaviour after COMPLETE: mark affected recommendations STALE (every reason at once)
        and make their successors."""
        for workload, messages in sorted(snap.alerts.items()):
            if workload not in snap.profiles:
                continue
            current = self._current(workload)
            reasons: dict[str, list[str]] = {}
            for alert in sorted((wire.alert(m) for m in messages), key=lambda a: a.last_seen):
                why = rec.trigger(alert)
                if why is None or alert.resolved:
                    continue
                for old in rec.affected(current, alert, why.kinds):
                    if alert.last_seen > old.create_time:
                        reasons.setdefault(old.name, []).append(why.reason)
            for old in current:
                if old.name in reasons:
                    self._replace(snap, old, "; ".join(dict.fromkeys(reasons[old.name])))

    def _replace(self, snap: Snapshot, old: rec.Recommendation, reason: str) -> None:
        with tracer.start_as_current_span("correlator.regenerate") as span:
            span.set_attribute("parallax.recommendation", old.name)
            stale = replace(old, state=S.STALE, state_reason=reason, update_time=self.clock())
            self.store.put_recommendation(stale)
            scope = {"containers": [old.container]} if old.container else {"all": []}
            fresh = self._generate(snap, old.workload, (old.kind,), scope)
            for made in fresh:
                previous, successor = succeed(stale, made, reason)
                self.store.put_recommendation(previous)
                self.store.put_recommendation(successor)

    def _scan_changed(self, snap: Snapshot) -> None:
        """A new posture scan: refresh what recommendations close; regenerate hardening whose
        workload's findings changed."""
        scans = [s.name for s in self.correlator.upstreams.latest_scans() if s.state in (2, 4)]
        newest = scans[0] if scans else ""
        changed = self.last_scan is not None and newest != self.last_scan
        self.last_scan = newest
        if not changed:
            return
        for item in self.store.recommendations(state=int(S.CURRENT)):
            findings = self._findings(snap, item.workload)
            closed = rec.closes(item.kind, item.closes_control_ids, findings)
            names = tuple(f.name for f in closed)
            moved = item.basis != self._basis(snap, item.workload)
            if item.kind is rec.Kind.HARDENING and moved and item.workload in snap.profiles:
                self._replace(snap, item, f"the workload's manifest changed ({newest})")
                continue
            self.store.put_recommendation(replace(item, closes_findings=names))

    # --- background running ----------------------------------------------------------------
    def start(self) -> None:
        """Run both passes every `interval` seconds, and whenever runtime reports an alert; each
        in its own thread, so a slow policy pass never delays incidents."""
        passes = (
            ("incident_pass", self.refresh, self.wakes["incidents"]),
            ("policy_pass", self.recommend, self.wakes["policies"]),
        )
        self.threads = [
            threading.Thread(target=self._every, args=(step, wake), name=name, daemon=True)
            for name, step, wake in passes
        ]
        self.threads.append(threading.Thread(target=self._follow, name="follow", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, waiting up to `timeout` for each; a call in flight ends at its
        deadline. Close the upstream channels only afterwards."""
        self.stopping.set()
        for wake in self.wakes.values():
            wake.set()
        for thread in self.threads:
            thread.join(timeout)

    def _every(self, step: Callable[[], str], wake: threading.Event) -> None:
        while not self.stopping.is_set():
            wake.clear()
            try:
                step()
            except Exception:
                log.exception("feedback pass failed; retrying next interval")
            wake.wait(self.interval)

    def _follow(self) -> None:
        while not self.stopping.is_set():
            try:
                for change in self.correlator.upstreams.watch_alerts(timeout=WATCH_SECONDS):
                    if change.HasField("alert"):
                        for wake in self.wakes.values():
                            wake.set()
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the watch's own deadline: follow again at once
                if not self.stopping.is_set():
                    log.warning("runtime WatchAlerts ended (%s); following again", exc.code())
            self.stopping.wait(self.interval)
