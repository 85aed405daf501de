"""Translation between the posture domain and its protobuf messages, both ways: the servicer
builds responses with it and `parallax scan --posture` reads findings back."""

from __future__ import annotations

import json
from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.posture.v1 import control_pb2, finding_pb2, scan_pb2
from parallax.type.v1 import severity_pb2, source_pb2, workload_pb2

from servicekit.errors import InvalidArgument
from services.posture.domain import (
    Control,
    Finding,
    ObjectRef,
    RuntimeEvidenceKind,
    ScanError,
    Severity,
    SourceLocation,
    Suppression,
)
from services.posture.history import HistoryState, ScanRecord, ScanState, StoredFinding
from services.posture.suppress import SuppressionConfig, load_suppressions
from services.posture.workload import POD_SPEC_PATHS

_SCAN_STATES = {
    ScanState.RUNNING: scan_pb2.SCAN_STATE_RUNNING,
    ScanState.SUCCEEDED: scan_pb2.SCAN_STATE_SUCCEEDED,
    ScanState.FAILED: scan_pb2.SCAN_STATE_FAILED,
    ScanState.PARTIAL: scan_pb2.SCAN_STATE_PARTIAL,
}
_HISTORY = {
    HistoryState.NEW: finding_pb2.FINDING_HISTORY_STATE_NEW,
    HistoryState.UNCHANGED: finding_pb2.FINDING_HISTORY_STATE_UNCHANGED,
    HistoryState.FIXED: finding_pb2.FINDING_HISTORY_STATE_FIXED,
}
_ORIGINS = {
    "annotation": finding_pb2.SUPPRESSION_ORIGIN_ANNOTATION,
    "config": finding_pb2.SUPPRESSION_ORIGIN_CONFIG,
}
_ORIGIN_NAMES = {wire_value: name for name, wire_value in _ORIGINS.items()}
_EVIDENCE = {
    kind: getattr(control_pb2, f"RUNTIME_EVIDENCE_KIND_{kind.name}") for kind in RuntimeEvidenceKind
}


def timestamp(moment: object) -> Timestamp | None:
    """Return a Timestamp for a datetime, None for None."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)  # type: ignore[arg-type]
    return stamp


def severity_to_wire(severity: Severity) -> severity_pb2.Severity.ValueType:
    """Map a domain severity to the shared enum."""
    return severity_pb2.Severity.Value(f"SEVERITY_{severity.name}")


def severity_from_wire(value: int) -> Severity:
    """Map the shared enum to a domain severity; UNSPECIFIED means LOW (everything)."""
    return Severity(value) if value else Severity.LOW


def location(where: SourceLocation) -> source_pb2.SourceLocation:
    """Map a source location."""
    return source_pb2.SourceLocation(uri=where.uri, document_index=where.document, line=where.line)


def scan_error(error: ScanError) -> scan_pb2.ScanError:
    """Map an input problem of a scan."""
    return scan_pb2.ScanError(location=location(error.location), message=error.message)


def scan(record: ScanRecord) -> scan_pb2.Scan:
    """Map a stored scan record."""
    counts = record.severity_counts
    return scan_pb2.Scan(
        name=record.name,
        state=_SCAN_STATES[record.state],
        create_time=timestamp(record.create_time),
        complete_time=timestamp(record.complete_time),
        source_description=record.description,
        source_key=record.source_key,
        previous_scan=f"scans/{record.previous_scan}" if record.previous_scan else "",
        frameworks=record.frameworks,
        objects_scanned=record.objects_scanned,
        finding_counts=scan_pb2.FindingCounts(
            low_count=counts.get("LOW", 0),
            medium_count=counts.get("MEDIUM", 0),
            high_count=counts.get("HIGH", 0),
            critical_count=counts.get("CRITICAL", 0),
            suppressed_count=record.suppressed_count,
            new_count=record.new_count,
            fixed_count=record.fixed_count,
        ),
        error_count=len(record.errors),
        errors=[scan_error(e) for e in record.errors],
        failure_message=record.failure_message,
    )


def finding(stored: StoredFinding, controls: Mapping[str, Control]) -> finding_pb2.Finding:
    """Map a stored finding, with the control's title and remediation."""
    found = stored.finding
    ref = found.object
    control = controls.get(found.control_id)
    message = finding_pb2.Finding(
        name=stored.name,
        control_id=found.control_id,
        control_title=control.name if control else "",
        severity=severity_to_wire(found.severity),
        object=finding_pb2.ObjectRef(
            location=location(ref.location),
            api_version=ref.api_version,
            kind=ref.kind,
            namespace=ref.namespace,
            object_name=ref.name,
        ),
        field_path=found.field_path,
        message=found.message,
        remediation=control.remediation if control else "",
        json_patch=json.dumps(list(found.patch)) if found.patch else "",
        history_state=_HISTORY[stored.state],
        fingerprint=stored.id,
        first_seen_time=timestamp(stored.first_seen_time),
    )
    if found.suppression is not None:
        message.suppression.reason = found.suppression.reason
        message.suppression.origin = _ORIGINS.get(
            found.suppression.origin, finding_pb2.SUPPRESSION_ORIGIN_UNSPECIFIED
        )
    if ref.kind in POD_SPEC_PATHS:
        message.owner.CopyFrom(
            workload_pb2.WorkloadRef(namespace=ref.namespace, kind=ref.kind, name=ref.name)
        )
    return message


def control(item: Control) -> control_pb2.Control:
    """Map a catalog control; framework entries such as `CIS 5.2.3` split into id and section."""
    frameworks = []
    for entry in item.frameworks:
        framework, _, section = entry.partition(" ")
        frameworks.append(control_pb2.FrameworkRef(framework_id=framework, section=section))
    return control_pb2.Control(
        name=f"controls/{item.id}",
        control_id=item.id,
        title=item.name,
        description=item.description,
        severity=severity_to_wire(item.severity),
        category=item.category,
        kubescape_ids=item.kubescape_ids,
        checkov_ids=item.checkov_ids,
        mapping_note=item.no_mapping_reason,
        frameworks=frameworks,
        remediation=item.remediation,
        runtime_evidence=control_pb2.RuntimeEvidence(
            kind=_EVIDENCE[item.runtime.kind], description=item.runtime.description
        ),
    )


def suppressions(entries: list[scan_pb2.ConfigSuppression]) -> SuppressionConfig | None:
    """Build a suppression config from request entries (validated like a config file)."""
    if not entries:
        return None
    rules = [
        {
            "control": e.control_id,
            **({"namespace": e.namespace} if e.namespace else {}),
            **({"kind": e.kind} if e.kind else {}),
            **({"name": e.object_name} if e.object_name else {}),
            "reason": e.reason,
        }
        for e in entries
    ]
    return load_suppressions(json.dumps({"suppressions": rules}))


def scan_state_from_wire(value: int) -> ScanState | None:
    """Map a ScanState filter; UNSPECIFIED means any state."""
    if not value:
        return None
    for state, wire_value in _SCAN_STATES.items():
        if wire_value == value:
            return state
    raise InvalidArgument(f"unknown scan state {value}")


def location_from_wire(where: source_pb2.SourceLocation) -> SourceLocation:
    """Map a source location back to the domain."""
    return SourceLocation(where.uri, where.document_index, where.line)


def scan_error_from_wire(error: scan_pb2.ScanError) -> ScanError:
    """Map an input problem of a scan back to the domain."""
    return ScanError(location_from_wire(error.location), error.message)


def finding_from_wire(message: finding_pb2.Finding) -> Finding:
    """Map a finding back to the domain, for clients that render reports."""
    ref = message.object
    suppression = None
    if message.HasField("suppression"):
        origin = _ORIGIN_NAMES.get(message.suppression.origin, "config")
        suppression = Suppression(message.suppression.reason, origin)
    return Finding(
        control_id=message.control_id,
        severity=severity_from_wire(message.severity),
        object=ObjectRef(
            location_from_wire(ref.location),
            ref.api_version,
            ref.kind,
            ref.namespace,
            ref.object_name,
        ),
        field_path=message.field_path,
        message=message.message,
        patch=tuple(json.loads(message.json_patch)) if message.json_patch else (),
        suppression=suppression,
    )
