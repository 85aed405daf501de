"""Request filters of the correlator's List and Watch RPCs: WorkloadRef matching (non-empty
fields must be equal), minimum severities, and the required workload of GetWorkloadContext."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servicekit.errors import InvalidArgument
from services.correlator.domain import Workload
from services.correlator.store import Row


def key(ref: Any) -> tuple[str, ...]:
    """The filter fields of a WorkloadRef, for page-token binding."""
    return (ref.namespace, ref.kind, ref.name, ref.container)


def required_workload(ref: Any) -> Workload:
    """The workload a request names; namespace, kind and name are required."""
    if not (ref.namespace and ref.kind and ref.name):
        raise InvalidArgument("workload needs namespace, kind and name")
    return Workload(ref.namespace, ref.kind, ref.name)


def ref_matches(ref: Any, workload: Workload, container: str = "") -> bool:
    """True when every non-empty field of `ref` equals the workload's (and container's)."""
    pairs = (
        (ref.namespace, workload.namespace),
        (ref.kind, workload.kind),
        (ref.name, workload.name),
        (ref.container, container),
    )
    return all(not want or want == have for want, have in pairs)


def same_workload(workload: Workload) -> Callable[[Workload], bool]:
    """A predicate for one workload."""
    return lambda other: other == workload


def row_matches(row: Row, ref: Any, minimum: int) -> bool:
    """A stored row within the workload filter and at or above the minimum severity."""
    return ref_matches(ref, row.workload, row.container) and row.severity >= minimum


def incident_matches(row: Row, ref: Any, minimum: int) -> bool:
    """A stored incident within the workload filter (container ignored: an incident is per
    workload) and at or above the minimum severity."""
    return ref_matches(ref, row.workload) and row.severity >= minimum


def incident_message_matches(incident: Any, request: Any) -> bool:
    """An incident message within a watch's filters."""
    workload = Workload(
        incident.alert.workload.namespace,
        incident.alert.workload.kind,
        incident.alert.workload.name,
    )
    return ref_matches(request.workload, workload) and incident.severity >= request.minimum_severity
