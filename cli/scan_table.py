"""`parallax scan --format table`: findings grouped per object as rich tables, then input errors
and a summary line. Imported only for that format, so JSON and SARIF scans never load rich."""

from __future__ import annotations

from collections import defaultdict
from typing import IO

from rich.console import Console
from rich.table import Table

from services.posture.domain import Finding, ScanReport, Severity, severity_counts

COLOURS = {"CRITICAL": "bold red", "HIGH": "red", "MEDIUM": "yellow", "LOW": "cyan"}


def render(result: ScanReport, file: IO[str] | None = None) -> None:
    """Print `result` to `file`: stdout at the terminal's width when None, else 200 columns."""
    target = Console(file=file, width=200 if file else None)
    groups: dict[tuple[str, str, str, str], list[Finding]] = defaultdict(list)
    for finding in result.findings:
        ref = finding.object
        groups[(ref.namespace or "-", ref.kind, ref.name, ref.location.uri)].append(finding)
    for (namespace, kind, name, uri), findings in sorted(groups.items()):
        table = Table(
            "control",
            "severity",
            "field",
            "message",
            title=f"{kind} {namespace}/{name}  ({uri})",
            title_justify="left",
        )
        for f in sorted(findings, key=lambda f: (-f.severity, f.control_id)):
            severity = f"[{COLOURS[f.severity.name]}]{f.severity.name}[/]"
            note = f" [dim](suppressed: {f.suppression.reason})[/dim]" if f.suppression else ""
            table.add_row(f.control_id, severity, f.field_path, f.message + note)
        target.print(table)
    for error in result.errors:
        at = error.location
        target.print(
            f"[red]error[/red] {at.uri} document {at.document} line {at.line}: {error.message}"
        )
    by_severity, suppressed = severity_counts(result.findings)
    summary = ", ".join(f"{by_severity[s.name]} {s.name.lower()}" for s in reversed(Severity))
    target.print(
        f"{result.objects_scanned} objects scanned, {sum(by_severity.values())} findings "
        f"({summary}), {suppressed} suppressed, {len(result.errors)} input errors"
    )
