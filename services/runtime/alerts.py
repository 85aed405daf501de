"""Alerts: detections aggregated per rule, workload, container and fingerprint, so that a repeat
increases a count and moves last-seen instead of raising a new alert; an alert keeps its first
occurrence (pod, node, process tree), its latest one, and the pods and nodes it occurred in (at
most MAX_PLACES each), since one alert spans the container's replicas; the OPEN, ACKNOWLEDGED,
RESOLVED lifecycle (a repeat after RESOLVED opens a new alert); and the JSON form the outputs
send. Pure; the engine records detections batch by batch and persists what `flush` returns."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from servicekit.errors import InvalidArgument, NotFound
from services.runtime import domain
from services.runtime.containers import Process
from services.runtime.rules import Detection

MAX_REASON = 1024
MAX_RESOLVED = 10_000  # resolved alerts kept (memory and store); older ones are forgotten
MAX_PLACES = 20  # pods, and nodes, listed per alert; later ones are counted but not listed


class AlertState(enum.IntEnum):
    """The lifecycle of an alert, numbered as parallax.runtime.v1.AlertState."""

    OPEN = 1
    ACKNOWLEDGED = 2
    RESOLVED = 3


@dataclass(frozen=True, eq=False)
class Alert:
    """A detection on one container, aggregated over repeats: `origin` and `tree` are the first
    occurrence's, `latest` and `latest_tree` the latest one's (at `last_seen`), `pods` and
    `nodes` the pod and node names it occurred in, first seen first, at most MAX_PLACES."""

    id: str
    key: str
    rule_id: str
    title: str
    severity: domain.Severity
    technique: str
    message: str
    origin: domain.Origin
    tree: tuple[Process, ...]
    latest: domain.Origin
    latest_tree: tuple[Process, ...]
    pods: tuple[str, ...]
    nodes: tuple[str, ...]
    evidence: dict[str, str]
    count: int
    first_seen: float
    last_seen: float
    state: AlertState
    update_time: float
    state_reason: str = ""

    @property
    def name(self) -> str:
        """Return the resource name, "alerts/{id}"."""
        return f"alerts/{self.id}"


def aggregation_key(detection: Detection, origin: domain.Origin) -> str:
    """Return what makes two detections the same alert."""
    return f"{detection.rule.rule_id}|{domain.container_path(origin)}|{detection.key}"


class Pending:
    """The detections of one alert in the current batch: how many, until when, the latest
    occurrence, and the pods and nodes they came from."""

    def __init__(
        self, base: Alert, count: int, last: float, origin: domain.Origin, tree: tuple[Process, ...]
    ) -> None:
        self.base = base
        self.count = count
        self.last = last
        self.latest = origin
        self.latest_tree = tree
        self.pods: list[str] = [origin.pod]
        self.nodes: list[str] = [origin.node]

    def add(
        self, count: int, last: float, origin: domain.Origin, tree: tuple[Process, ...]
    ) -> None:
        """Count `count` more detections up to `last` from `origin` with process tree `tree`."""
        self.count += count
        if last >= self.last:
            self.last, self.latest, self.latest_tree = last, origin, tree
        if len(self.pods) < MAX_PLACES and origin.pod not in self.pods:
            self.pods.append(origin.pod)
        if len(self.nodes) < MAX_PLACES and origin.node not in self.nodes:
            self.nodes.append(origin.node)


def _places(known: tuple[str, ...], seen: list[str]) -> tuple[str, ...]:
    """Return `known` followed by the names of `seen` it lacks, at most MAX_PLACES."""
    if len(known) >= MAX_PLACES or all(name in known for name in seen):
        return known
    merged = list(known)
    for name in seen:
        if name not in merged and len(merged) < MAX_PLACES:
            merged.append(name)
    return tuple(merged)


class AlertBook:
    """All alerts in memory, with pending repeats of the current batch."""

    def __init__(self) -> None:
        self.by_id: dict[str, Alert] = {}
        self.live: dict[str, Alert] = {}
        self.pending: dict[str, Pending] = {}
        self.resolved: dict[str, float] = {}  # alert id -> resolution time, oldest first

    def load(self, alert: Alert) -> None:
        """Take a stored alert (in any order)."""
        self.by_id[alert.id] = alert
        if alert.state is not AlertState.RESOLVED:
            self.live[alert.key] = alert
            return
        self.resolved[alert.id] = alert.update_time
        if len(self.resolved) > 1 and alert.update_time < max(self.resolved.values()):
            self.resolved = dict(sorted(self.resolved.items(), key=lambda item: item[1]))

    def forget_resolved(self, limit: int = MAX_RESOLVED) -> list[str]:
        """Forget the oldest resolved alerts beyond `limit`; return their ids."""
        forgotten: list[str] = []
        while len(self.resolved) > limit:
            alert_id = next(iter(self.resolved))
            del self.resolved[alert_id]
            self.by_id.pop(alert_id, None)
            forgotten.append(alert_id)
        return forgotten

    def record(
        self,
        detection: Detection,
        event: domain.Event,
        tree: tuple[Process, ...],
        count: int = 1,
        last: float | None = None,
    ) -> None:
        """Note a detection on `event` and on `count - 1` equal events up to time `last`; it
        reaches the alerts at `flush`."""
        key = aggregation_key(detection, event.origin)
        latest = event.at if last is None else max(last, event.at)
        waiting = self.pending.get(key)
        if waiting is not None:
            waiting.add(count, latest, event.origin, tree)
            return
        base = self.live.get(key) or _new_alert(key, detection, event, tree)
        self.pending[key] = Pending(base, count, latest, event.origin, tree)

    def flush(self, now: float) -> list[tuple[Alert, bool]]:
        """Apply the pending detections; return each changed alert and whether it is new."""
        changed: list[tuple[Alert, bool]] = []
        for key, waiting in self.pending.items():
            base = waiting.base
            is_new = base.id not in self.by_id
            total = waiting.count if is_new else base.count + waiting.count
            # An agent's late backlog may be older than what the alert already holds.
            newer = waiting.last >= base.last_seen
            alert = replace(
                base,
                count=total,
                last_seen=max(base.last_seen, waiting.last),
                latest=waiting.latest if newer else base.latest,
                latest_tree=waiting.latest_tree if newer else base.latest_tree,
                pods=_places(base.pods, waiting.pods),
                nodes=_places(base.nodes, waiting.nodes),
                update_time=now,
            )
            self.by_id[alert.id] = self.live[key] = alert
            changed.append((alert, is_new))
        self.pending.clear()
        return changed

    def discard_pending(self) -> None:
        """Forget the pending detections of a batch that was not stored."""
        self.pending.clear()

    def get(self, alert_id: str) -> Alert:
        """Return the alert, or raise NotFound."""
        found = self.by_id.get(alert_id)
        if found is None:
            raise NotFound(f"alert alerts/{alert_id} does not exist")
        return found

    def set_state(self, alert_id: str, state: AlertState, reason: str, now: float) -> Alert:
        """Acknowledge or resolve an alert."""
        if state not in (AlertState.ACKNOWLEDGED, AlertState.RESOLVED):
            raise InvalidArgument("state must be ALERT_STATE_ACKNOWLEDGED or ALERT_STATE_RESOLVED")
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"reason must be at most {MAX_REASON} characters")
        alert = replace(self.get(alert_id), state=state, state_reason=reason, update_time=now)
        self.by_id[alert_id] = alert
        self.resolved.pop(alert_id, None)
        if state is AlertState.RESOLVED:
            self.resolved[alert_id] = now
            if self.live.get(alert.key) is not None and self.live[alert.key].id == alert_id:
                del self.live[alert.key]
        else:
            self.live[alert.key] = alert
        return alert


def _new_alert(
    key: str, detection: Detection, event: domain.Event, tree: tuple[Process, ...]
) -> Alert:
    rule = detection.rule
    digest = hashlib.sha256(f"{key}|{event.at!r}|{event.pid}".encode()).hexdigest()[:20]
    return Alert(
        id=digest,
        key=key,
        rule_id=rule.rule_id,
        title=rule.title,
        severity=rule.severity,
        technique=rule.technique,
        message=detection.message,
        origin=event.origin,
        tree=tree,
        latest=event.origin,
        latest_tree=tree,
        pods=(event.origin.pod,),
        nodes=(event.origin.node,),
        evidence=detection.evidence,
        count=0,
        first_seen=event.at,
        last_seen=event.at,
        state=AlertState.OPEN,
        update_time=event.at,
    )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _tree_json(tree: tuple[Process, ...]) -> list[dict[str, Any]]:
    return [{"pid": p.pid, "ppid": p.ppid, "path": p.path} for p in tree]


def to_json(alert: Alert) -> dict[str, Any]:
    """Return the alert as the JSON object written to stdout and webhooks: the first
    occurrence at the top level (as in the Alert message), the latest in "latestOccurrence"."""
    origin, latest = alert.origin, alert.latest
    return {
        "name": alert.name,
        "ruleId": alert.rule_id,
        "title": alert.title,
        "severity": alert.severity.name,
        "mitreTechniqueId": alert.technique,
        "message": alert.message,
        "workload": {
            "namespace": origin.workload.namespace,
            "kind": origin.workload.kind,
            "name": origin.workload.name,
            "pod": origin.pod,
            "container": origin.container,
        },
        "podUid": origin.pod_uid,
        "containerId": origin.container_id,
        "imageDigest": origin.image_digest,
        "node": origin.node,
        "processTree": _tree_json(alert.tree),
        "podNames": list(alert.pods),
        "nodeNames": list(alert.nodes),
        "latestOccurrence": {
            "pod": latest.pod,
            "podUid": latest.pod_uid,
            "containerId": latest.container_id,
            "imageDigest": latest.image_digest,
            "node": latest.node,
            "processTree": _tree_json(alert.latest_tree),
        },
        "evidence": alert.evidence,
        "count": alert.count,
        "firstSeenTime": _iso(alert.first_seen),
        "lastSeenTime": _iso(alert.last_seen),
        "state": alert.state.name,
    }
