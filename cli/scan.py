"""`parallax scan`: posture scan of manifests or a live cluster, in-process like `checkov -d`
or submitted to a posture service with `--posture ADDR`; table, JSON or SARIF output and CI exit
codes (1: a finding at or above --fail-on; 2: usage or input errors, so an unreadable input is
never reported as a clean scan)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cli.connection import InsecureOption, TlsDirOption, material
from servicekit.errors import DomainError
from services.posture import loader, report, rules
from services.posture.domain import ScanReport, Severity, severity_counts
from services.posture.suppress import SuppressionConfig, load_suppressions

console = Console(stderr=True)
FORMATS = ("table", "json", "sarif")
EXIT_FINDINGS, EXIT_USAGE = 1, 2


def scan(
    paths: list[str] = typer.Argument(None, help="Files or directories (recursive); - for stdin."),
    cluster: bool = typer.Option(False, "--cluster", help="Scan the live cluster instead."),
    context: str = typer.Option("", "--context", help="kubeconfig context for --cluster."),
    output_format: str = typer.Option("table", "--format", help="table, json or sarif."),
    output: Path | None = typer.Option(None, "--output", help="Write the report to this file."),
    fail_on: str = typer.Option(
        "",
        "--fail-on",
        help="Exit 1 on an unsuppressed finding at or above LOW|MEDIUM|HIGH|CRITICAL.",
    ),
    framework: list[str] = typer.Option(
        [], "--framework", help="Only controls of nsa, mitre, cis, ..."
    ),
    suppressions: Path | None = typer.Option(
        None, "--suppressions", help="Suppression config YAML."
    ),
    posture: str = typer.Option("", "--posture", help="Submit to the posture service at ADDR."),
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Scan manifests or a cluster against Parallax's posture controls."""
    threshold = _threshold(fail_on)
    if output_format not in FORMATS:
        _usage(f"--format must be one of {', '.join(FORMATS)}")
    if not paths and not cluster:
        _usage("give at least one PATH (or - for stdin), or --cluster")
    try:
        config = load_suppressions(suppressions.read_text()) if suppressions else None
        if posture:
            from cli.remote import remote_scan

            tls = material(tls_dir, insecure)
            result = remote_scan(posture, tls, paths or [], cluster, context, framework, config)
        else:
            result = _local_scan(paths or [], cluster, context, framework, config)
    except (DomainError, OSError) as exc:
        _usage(str(exc))
    _emit(result, output_format, output)
    raise typer.Exit(_exit_code(result, threshold))


def _local_scan(
    paths: list[str],
    cluster: bool,
    context: str,
    frameworks: list[str],
    config: SuppressionConfig | None,
) -> ScanReport:
    # A progress bar on stderr, only for a person at a terminal; it never touches stdout.
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("reading manifests", total=None)
        if cluster:
            from services.posture.livecluster import ClusterAccess
            from services.posture.scans import ClusterRequest

            progress.update(task, description="listing the cluster")
            _, manifests, errors = ClusterAccess(None, False).list(ClusterRequest(context=context))
        else:

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            manifests, errors = loader.load_paths(paths, on_progress=advance)
        progress.update(task, description=f"evaluating {len(manifests)} objects", refresh=True)
        result = rules.evaluate(manifests, frameworks=frameworks, suppressions=config)
    return ScanReport(
        result.findings,
        tuple(errors) + result.errors,
        result.objects_scanned,
        result.objects_ignored,
    )


def _threshold(fail_on: str) -> Severity | None:
    if not fail_on:
        return None
    try:
        return Severity[fail_on.upper()]
    except KeyError:
        _usage("--fail-on must be LOW, MEDIUM, HIGH or CRITICAL")


def _usage(message: str) -> NoReturn:
    console.print(f"[red]parallax scan: {message}[/red]")
    raise typer.Exit(EXIT_USAGE)


def _exit_code(result: ScanReport, threshold: Severity | None) -> int:
    if result.errors:
        return EXIT_USAGE
    live = (f for f in result.findings if f.suppression is None)
    if threshold is not None and any(f.severity >= threshold for f in live):
        return EXIT_FINDINGS
    return 0


def _emit(result: ScanReport, output_format: str, output: Path | None) -> None:
    if output_format == "table":
        target = Console(
            file=output.open("w") if output else sys.stdout, width=200 if output else None
        )
        _table(result, target)
        return
    document = (
        report.to_json(result)
        if output_format == "json"
        else report.to_sarif(result, rules.CONTROLS)
    )
    # Indented only for a person at a terminal: indent forces json's slow pure-Python encoder.
    text = json.dumps(document, indent=2 if output is None and sys.stdout.isatty() else None)
    if output:
        output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


def _table(result: ScanReport, target: Console) -> None:
    groups: dict[tuple[str, str, str, str], list[Any]] = defaultdict(list)
    for finding in result.findings:
        ref = finding.object
        groups[(ref.namespace or "-", ref.kind, ref.name, ref.location.uri)].append(finding)
    colours = {"CRITICAL": "bold red", "HIGH": "red", "MEDIUM": "yellow", "LOW": "cyan"}
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
            severity = f"[{colours[f.severity.name]}]{f.severity.name}[/]"
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


def register(app: typer.Typer) -> None:
    """Add `scan` to the `parallax` app."""
    app.command()(scan)
