"""Renders a ScanReport as Parallax JSON or SARIF 2.1.0 (GitHub code scanning), as plain dicts.

Pure functions called by the CLI (`--format json|sarif`) and the servicer; the JSON schema is
documented in the README (Posture scanning).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from services.posture.domain import (
    Control,
    Finding,
    ScanError,
    ScanReport,
    Severity,
    severity_counts,
)

JSON_SCHEMA_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/parallax-dev/parallax"
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
}
SARIF_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
}


def to_json(report: ScanReport) -> dict[str, Any]:
    """The documented JSON document: summary, findings and errors."""
    by_severity, suppressed = severity_counts(report.findings)
    return {
        "schemaVersion": JSON_SCHEMA_VERSION,
        "summary": {
            "objectsScanned": report.objects_scanned,
            "objectsIgnored": report.objects_ignored,
            "findings": sum(by_severity.values()),
            "suppressed": suppressed,
            "errors": len(report.errors),
            "bySeverity": {s.name: by_severity[s.name] for s in reversed(Severity)},
        },
        "findings": [_finding_json(f) for f in report.findings],
        "errors": [_error_json(e) for e in report.errors],
    }


def _finding_json(finding: Finding) -> dict[str, Any]:
    ref = finding.object
    suppression = finding.suppression
    return {
        "key": finding.key,
        "controlId": finding.control_id,
        "severity": finding.severity.name,
        "object": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        },
        "source": {
            "uri": ref.location.uri,
            "document": ref.location.document,
            "line": ref.location.line,
        },
        "fieldPath": finding.field_path,
        "message": finding.message,
        "patch": [dict(op) for op in finding.patch],
        "suppression": None
        if suppression is None
        else {"reason": suppression.reason, "origin": suppression.origin},
    }


def _error_json(error: ScanError) -> dict[str, Any]:
    location = error.location
    return {
        "uri": location.uri,
        "document": location.document,
        "line": location.line,
        "message": error.message,
    }


def to_sarif(report: ScanReport, controls: Sequence[Control]) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; every control is a rule, every finding a result."""
    ordered = sorted(controls, key=lambda c: c.id)
    rule_index = {control.id: i for i, control in enumerate(ordered)}
    results = [_result(f, rule_index) for f in report.findings if f.control_id in rule_index]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "Parallax",
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule(c) for c in ordered],
                    }
                },
                "results": results,
                "invocations": [_invocation(report.errors)],
            }
        ],
    }


def _rule(control: Control) -> dict[str, Any]:
    mappings = ", ".join((*control.kubescape_ids, *control.checkov_ids)) or "none"
    return {
        "id": control.id,
        "name": "".join(word.capitalize() for word in _words(control.name)),
        "shortDescription": {"text": control.name},
        "fullDescription": {"text": control.description or control.name},
        "help": {"text": f"{control.remediation}\n\nKubescape/Checkov: {mappings}"},
        "defaultConfiguration": {"level": SARIF_LEVEL[control.severity]},
        "properties": {
            "security-severity": SECURITY_SEVERITY[control.severity],
            "tags": ["security", "kubernetes", *control.frameworks],
            "precision": "high",
        },
    }


def _words(name: str) -> list[str]:
    return "".join(ch if ch.isalnum() else " " for ch in name).split()


def _result(finding: Finding, rule_index: dict[str, int]) -> dict[str, Any]:
    ref = finding.object
    location: dict[str, Any] = {"artifactLocation": {"uri": artifact_uri(ref.location.uri)}}
    if ref.location.line >= 1:
        location["region"] = {"startLine": ref.location.line}
    name = "/".join(part for part in (ref.namespace, ref.kind, ref.name) if part)
    result: dict[str, Any] = {
        "ruleId": finding.control_id,
        "ruleIndex": rule_index[finding.control_id],
        "level": SARIF_LEVEL[finding.severity],
        "message": {"text": f"{ref.kind}/{ref.name}: {finding.message} ({finding.field_path})"},
        "locations": [
            {
                "physicalLocation": location,
                "logicalLocations": [{"fullyQualifiedName": f"{name}:{finding.field_path}"}],
            }
        ],
        "partialFingerprints": {
            "parallaxFindingKey/v1": hashlib.sha256(finding.key.encode()).hexdigest()
        },
    }
    if finding.suppression is not None:
        kind = "inSource" if finding.suppression.origin == "annotation" else "external"
        result["suppressions"] = [{"kind": kind, "justification": finding.suppression.reason}]
    return result


def artifact_uri(uri: str) -> str:
    """A SARIF artifact URI: relative paths stay relative (GitHub resolves them to the repo)."""
    if uri == "-":
        return "stdin"
    if "://" in uri:
        return uri
    path = uri.replace(os.sep, "/")
    if os.path.isabs(uri):
        return "file://" + quote(path)
    return quote(path.removeprefix("./"))


def _invocation(errors: Sequence[ScanError]) -> dict[str, Any]:
    notifications = [
        {
            "level": "error",
            "message": {"text": error.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": artifact_uri(error.location.uri)}
                    }
                }
            ],
        }
        for error in errors
    ]
    return {"executionSuccessful": True, "toolExecutionNotifications": notifications}
