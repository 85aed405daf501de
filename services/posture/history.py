"""Scan records and finding history: which findings of a scan are new, unchanged or fixed
relative to the previous scan of the same source. Pure; the store persists what this computes."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.posture.domain import Finding, ScanError


class ScanState(enum.Enum):
    """Lifecycle of a scan; PARTIAL means it finished but some inputs could not be read."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"


class HistoryState(enum.Enum):
    """A finding compared with the previous scan of the same source."""

    NEW = "new"
    UNCHANGED = "unchanged"
    FIXED = "fixed"


@dataclass(frozen=True)
class ScanRecord:
    """One scan as stored: its source, state, counts and input errors."""

    id: str
    source_key: str
    description: str
    state: ScanState
    create_time: datetime
    complete_time: datetime | None = None
    previous_scan: str = ""
    frameworks: tuple[str, ...] = ()
    objects_scanned: int = 0
    severity_counts: dict[str, int] = field(default_factory=dict)
    suppressed_count: int = 0
    new_count: int = 0
    fixed_count: int = 0
    errors: tuple[ScanError, ...] = ()
    failure_message: str = ""

    @property
    def name(self) -> str:
        """Return the resource name `scans/{id}`."""
        return f"scans/{self.id}"


@dataclass(frozen=True)
class StoredFinding:
    """A finding of a stored scan with its history state and the time it was first seen."""

    id: str
    scan_id: str
    finding: Finding
    state: HistoryState
    first_seen_time: datetime

    @property
    def name(self) -> str:
        """Return the resource name `scans/{scan}/findings/{finding}`."""
        return f"scans/{self.scan_id}/findings/{self.id}"


def source_key(uris: Iterable[str]) -> str:
    """Identify a set of sources so that re-scans of the same inputs can be compared."""
    ordered = sorted(set(uris))
    if len(ordered) == 1:
        return ordered[0]
    digest = hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]
    return f"set:{digest}"


def finding_id(finding: Finding) -> str:
    """A stable id for a finding: the same problem keeps its id across scans."""
    return hashlib.sha256(finding.key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Diff:
    """The outcome of comparing a scan's findings with its predecessor's."""

    current: tuple[tuple[Finding, HistoryState, datetime], ...]
    fixed: tuple[tuple[Finding, datetime], ...]


def diff(
    findings: Sequence[Finding],
    previous: Sequence[StoredFinding],
    now: datetime,
) -> Diff:
    """Mark each finding NEW or UNCHANGED, and list the previous findings now FIXED."""
    before = {f.finding.key: f for f in previous if f.state is not HistoryState.FIXED}
    current = []
    unique = {f.key: f for f in reversed(findings)}
    for finding in (f for f in findings if unique.get(f.key) is f):
        earlier = before.get(finding.key)
        if earlier is None:
            current.append((finding, HistoryState.NEW, now))
        else:
            current.append((finding, HistoryState.UNCHANGED, earlier.first_seen_time))
    seen = set(unique)
    fixed = tuple((f.finding, f.first_seen_time) for k, f in before.items() if k not in seen)
    return Diff(tuple(current), fixed)
