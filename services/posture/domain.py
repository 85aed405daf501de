"""Domain types of the posture service: manifests, controls, findings and scan reports.

Pure frozen dataclasses shared by the loader, the rules, the report renderers and the lead's
servicer and store; nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from servicekit import errors


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so `--fail-on` can compare."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class RuntimeEvidenceKind(enum.Enum):
    """What runtime (eBPF) evidence can say about a control, the "Runtime" column."""

    USED = "used"
    CONFIRM_REFUTE = "confirm_refute"
    CONFIRM = "confirm"
    EXPOSED = "exposed"
    PARTIAL = "partial"
    NONE = "none"


# Re-exported so posture code raises the kit's errors, which map to canonical status codes.
NotFound = errors.NotFound
InvalidArgument = errors.InvalidArgument


@dataclass(frozen=True)
class SourceLocation:
    """Where an object came from: a path, "-" for stdin, or "cluster://<name>"."""

    uri: str
    document: int
    line: int


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object as loaded, with its identity pulled out of `body`."""

    location: SourceLocation
    api_version: str
    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any]

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.location, self.api_version, self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class ObjectRef:
    """The identity of a judged object without its body."""

    location: SourceLocation
    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class RuntimeEvidence:
    """What runtime evidence would confirm or refute a control, for the correlator."""

    kind: RuntimeEvidenceKind
    description: str


@dataclass(frozen=True)
class Control:
    """One posture control of the catalog; `id` is stable and never reused."""

    id: str
    name: str
    description: str
    severity: Severity
    kubescape_ids: tuple[str, ...]
    checkov_ids: tuple[str, ...]
    no_mapping_reason: str
    frameworks: tuple[str, ...]
    remediation: str
    runtime: RuntimeEvidence
    category: str


@dataclass(frozen=True)
class Suppression:
    """Why a finding is accepted; origin is "annotation" or "config"."""

    reason: str
    origin: str


@dataclass(frozen=True)
class Finding:
    """One control failing on one field of one object."""

    control_id: str
    severity: Severity
    object: ObjectRef
    field_path: str
    message: str
    patch: tuple[Mapping[str, Any], ...]
    suppression: Suppression | None

    @property
    def key(self) -> str:
        """Stable identity for diffing scans; line and document index are left out on purpose."""
        ref = self.object
        return "|".join(
            (self.control_id, ref.location.uri, ref.kind, ref.namespace, ref.name, self.field_path)
        )


@dataclass(frozen=True)
class ScanError:
    """A problem with the input that stopped one file or document, not the scan."""

    location: SourceLocation
    message: str


@dataclass(frozen=True)
class ScanReport:
    """The result of one evaluation; `objects_ignored` counts kinds no control inspects."""

    findings: tuple[Finding, ...]
    errors: tuple[ScanError, ...]
    objects_scanned: int
    objects_ignored: int = 0


def severity_counts(findings: Iterable[Finding]) -> tuple[dict[str, int], int]:
    """Count unsuppressed findings per severity name, and suppressed ones apart."""
    by_severity = {s.name: 0 for s in Severity}
    suppressed = 0
    for finding in findings:
        if finding.suppression is not None:
            suppressed += 1
        else:
            by_severity[finding.severity.name] += 1
    return by_severity, suppressed
