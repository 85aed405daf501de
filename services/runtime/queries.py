"""Read-side selections over the engine's memory for the List and Get RPCs: filters, ordering and
the learning targets agents poll. Callers hold the engine lock while they use the results."""

from __future__ import annotations

from dataclasses import dataclass

from servicekit.errors import InvalidArgument, NotFound
from services.runtime import domain
from services.runtime.alerts import Alert, AlertState
from services.runtime.engine import Engine
from services.runtime.learning import Profile, WorkloadRecord
from services.runtime.profiles import State


@dataclass(frozen=True)
class RefFilter:
    """A WorkloadRef used as a filter: non-empty fields must be equal."""

    namespace: str = ""
    kind: str = ""
    name: str = ""
    pod: str = ""
    container: str = ""

    def matches(self, workload: domain.Workload, container: str = "", pod: str = "") -> bool:
        """Return True when every non-empty field equals the candidate's."""
        pairs = (
            (self.namespace, workload.namespace),
            (self.kind, workload.kind),
            (self.name, workload.name),
            (self.pod, pod),
            (self.container, container),
        )
        return all(not wanted or wanted == actual for wanted, actual in pairs)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a listing or watch returns."""

    where: RefFilter = RefFilter()
    state: AlertState | None = None
    minimum_severity: int = 0
    rule_ids: tuple[str, ...] = ()
    min_last_seen: float = 0.0

    def matches(self, alert: Alert) -> bool:
        """Return True when `alert` passes every filter."""
        origin = alert.origin
        pods = (alert.pods or (origin.pod,)) if self.where.pod else (origin.pod,)  # any it hit
        return (
            any(self.where.matches(origin.workload, origin.container, pod) for pod in pods)
            and (self.state is None or alert.state is self.state)
            and alert.severity >= self.minimum_severity
            and (not self.rule_ids or alert.rule_id in self.rule_ids)
            and alert.last_seen >= self.min_last_seen
        )


def workload_of(namespace: str, kind: str, name: str) -> domain.Workload:
    """Return the workload, or raise InvalidArgument when a part is missing."""
    if not (namespace and kind and name):
        raise InvalidArgument("workload needs namespace, kind and name")
    return domain.Workload(namespace, kind, name)


def workloads(engine: Engine, namespace: str, state: State | None) -> list[WorkloadRecord]:
    """Return the workloads in a namespace (all when empty), ordered by namespace, kind, name."""
    found = []
    for key in sorted(engine.workloads):
        if namespace and key.namespace != namespace:
            continue
        if state is not None and not any(p.state is state for p in current_profiles(engine, key)):
            continue
        found.append(engine.workloads[key])
    return found


def current_profiles(engine: Engine, workload: domain.Workload) -> list[Profile]:
    """Return the current profile of each container of `workload`."""
    return [p for (owner, _), p in engine.current.items() if owner == workload]


def open_alerts(engine: Engine, workload: domain.Workload) -> int:
    """Return the number of OPEN alerts on `workload`."""
    live = engine.alerts.live.values()
    return sum(1 for a in live if a.state is AlertState.OPEN and a.origin.workload == workload)


def profile(engine: Engine, workload: domain.Workload, container: str, digest: str) -> Profile:
    """Return the profile of a container (its current one when `digest` is empty)."""
    if not container:
        raise InvalidArgument("workload.container is required")
    found = engine.current.get((workload, container))
    if digest:
        found = next(
            (
                p
                for p in engine.profiles.values()
                if p.workload == workload and p.container == container and p.digest == digest
            ),
            None,
        )
    if found is None:
        raise NotFound(f"no profile for {workload.path} container {container}")
    return found


def profiles(
    engine: Engine, where: RefFilter, state: State | None, superseded: bool, since: float
) -> list[Profile]:
    """Return matching profiles ordered by name."""
    return [
        p
        for name, p in sorted(engine.profiles.items())
        if where.matches(p.workload, p.container)
        and (state is None or p.state is state)
        and (superseded or p.current)
        and p.update_time >= since
    ]


def alerts(engine: Engine, where: AlertFilter) -> list[Alert]:
    """Return matching alerts, most recently seen first."""
    found = [a for a in engine.alerts.by_id.values() if where.matches(a)]
    return sorted(found, key=lambda a: (-a.last_seen, a.id))


def learning_targets(engine: Engine) -> list[tuple[WorkloadRecord, list[Profile], bool]]:
    """Return each opted-in workload, its current profiles, and whether to monitor (every
    container's learning ended) rather than record."""
    targets = []
    for key in sorted(engine.workloads):
        record = engine.workloads[key]
        if record.learning_enabled:
            current = current_profiles(engine, key)
            monitor = bool(current) and not any(p.learning for p in current)
            targets.append((record, current, monitor))
    return targets
