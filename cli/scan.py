"""`parallax scan`: posture scan of manifests or a live cluster, in-process like `checkov -d`
or submitted to a posture service with `--posture ADDR`; table, JSON or SARIF output and CI exit
codes (1: a finding at or above --fail-on; 2: usage or input errors, so an unreadable input is
never reported as a clean scan). JSON and SARIF scans load neither rich nor grpc."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import orjson
import typer

from cli.connection import InsecureOption, TlsDirOption, material
from cli.scan_progress import progress
from servicekit.errors import DomainError
from services.posture import loader, report, rules
from services.posture.domain import ScanReport, Severity
from services.posture.suppress import SuppressionConfig, load_suppressions

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
            with _collector_paused():
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
    with progress("reading manifests") as update:
        if cluster:
            from services.posture.livecluster import ClusterAccess
            from services.posture.scans import ClusterRequest

            update("listing the cluster")
            _, manifests, errors = ClusterAccess(None, False).list(ClusterRequest(context=context))
        else:

            def advance(done: int, total: int) -> None:
                update(done=done, total=total)

            manifests, errors = loader.load_paths(paths, on_progress=advance)
        update(f"evaluating {len(manifests)} objects")
        result = rules.evaluate(manifests, frameworks=frameworks, suppressions=config)
    return ScanReport(
        result.findings,
        tuple(errors) + result.errors,
        result.objects_scanned,
        result.objects_ignored,
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Run a one-shot scan without the cyclic garbage collector. Loading builds hundreds of
    thousands of long-lived dicts and lists and no cycles, so the collector's repeated passes
    over them find nothing and cost about a tenth of the scan."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _threshold(fail_on: str) -> Severity | None:
    if not fail_on:
        return None
    try:
        return Severity[fail_on.upper()]
    except KeyError:
        _usage("--fail-on must be LOW, MEDIUM, HIGH or CRITICAL")


def _usage(message: str) -> NoReturn:
    typer.secho(f"parallax scan: {message}", fg="red", err=True)
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
        from cli import scan_table

        if output is None:
            scan_table.render(result)
        else:
            with output.open("w") as file:
                scan_table.render(result, file)
        return
    document: dict[str, Any] = (
        report.to_json(result)
        if output_format == "json"
        else report.to_sarif(result, rules.CONTROLS)
    )
    # Indented only for a person at a terminal. JSON is UTF-8 (RFC 8259), written as bytes.
    indent = orjson.OPT_INDENT_2 if output is None and sys.stdout.isatty() else 0
    text = orjson.dumps(
        document, option=indent | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    )
    if output:
        output.write_bytes(text)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(text)
        sys.stdout.buffer.flush()


def register(app: typer.Typer) -> None:
    """Add `scan` to the `parallax` app."""
    app.command()(scan)
