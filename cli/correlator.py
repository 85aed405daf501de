"""`parallax risks`, `parallax context`, `parallax incidents` and `parallax vulns`: clients of the
correlator service (--correlator ADDR, mTLS like every client command) for the risk ranking, one
workload's whole picture, contextual incidents (once or following them) and in-use
vulnerabilities (import a scanner report, list verdicts, export OpenVEX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.connection import InsecureOption, TlsDirOption, channel, material
from servicekit.errors import ConfigError

console = Console()
errors = Console(stderr=True)
CorrelatorOption = typer.Option("127.0.0.1:50054", "--correlator", help="Correlator address.")
FormatOption = typer.Option("table", "--format", help="table or json (one JSON object a line).")
SEVERITIES = {0: "-", 1: "LOW", 2: "MEDIUM", 3: "HIGH", 4: "CRITICAL"}
VERDICTS = {0: "-", 1: "EXERCISED", 2: "NOT_EXERCISED", 3: "NO_EVIDENCE"}
USAGE = {1: "IN_USE", 2: "NOT_IN_USE", 3: "UNKNOWN"}
READINESS = {1: "INSUFFICIENT_EVIDENCE", 2: "UNVERIFIED", 3: "READY", 4: "FAILED"}
REC_STATES = {1: "CURRENT", 2: "STALE", 3: "SUPERSEDED"}
REPORT_FORMATS = {"trivy": 1, "grype": 2, "cyclonedx": 3}


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]parallax: {escape(message)}[/red]")
    raise typer.Exit(2)


def _call(address: str, tls_dir: Path | None, insecure: bool, method: str, request: Any) -> Any:
    """Call one correlator RPC; errors end the command with exit status 2."""
    import grpc
    from parallax.correlator.v1 import correlator_service_pb2_grpc as pb_grpc

    try:
        stub = pb_grpc.CorrelatorServiceStub(channel(address, material(tls_dir, insecure), 60))
        if method == "WatchIncidents":
            return stub.WatchIncidents(request, timeout=None)
        return getattr(stub, method)(request, timeout=60)
    except ConfigError as exc:
        _fail(str(exc))
    except grpc.RpcError as exc:
        _fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]


def _workload(text: str) -> Any:
    from parallax.type.v1 import workload_pb2

    parts = text.split("/")
    if len(parts) not in (3, 4) or not all(parts):
        _fail(f"WORKLOAD must be NAMESPACE/KIND/NAME(/CONTAINER), got {text!r}")
    container = parts[3] if len(parts) == 4 else ""
    return workload_pb2.WorkloadRef(
        namespace=parts[0], kind=parts[1], name=parts[2], container=container
    )


def _json(message: Any) -> str:
    from google.protobuf.json_format import MessageToDict

    return json.dumps(MessageToDict(message), separators=(",", ":"))


def risks(
    namespace: str = typer.Option("", "--namespace", help="Only this namespace."),
    output_format: str = FormatOption,
    correlator: str = CorrelatorOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Rank workloads by risk, each score explained term by term."""
    from parallax.correlator.v1 import correlator_service_pb2 as pb

    found = _call(correlator, tls_dir, insecure, "ListRisks", pb.ListRisksRequest(
        namespace=namespace, page_size=200)).risks  # fmt: skip
    if output_format == "json":
        for risk in found:
            print(_json(risk))
        return
    table = Table("rank", "score", "band", "workload", "largest terms")
    for risk in found:
        ref = risk.workload
        top = "; ".join(f"{t.term} {t.contribution:g}: {t.explanation}" for t in risk.terms[:2])
        table.add_row(str(risk.rank), f"{risk.score:.1f}", SEVERITIES[risk.severity],
                      f"{ref.namespace}/{ref.kind}/{ref.name}", escape(top))  # fmt: skip
    console.print(table)


def context(
    workload: str = typer.Argument(..., help="NAMESPACE/KIND/NAME"),
    output_format: str = FormatOption,
    correlator: str = CorrelatorOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """One screen on a workload: findings with verdicts, profiles, policies, incidents, CVEs."""
    from parallax.correlator.v1 import correlator_service_pb2 as pb

    request = pb.GetWorkloadContextRequest(workload=_workload(workload))
    found = _call(correlator, tls_dir, insecure, "GetWorkloadContext", request).workload_context
    if output_format == "json":
        print(_json(found))
        return
    from cli.correlator_view import show_context

    show_context(console, found)


def incidents(
    follow: bool = typer.Option(False, "--follow", help="Stream new and updated incidents."),
    output_format: str = FormatOption,
    correlator: str = CorrelatorOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """List contextual incidents, newest first, or follow them as they happen."""
    from parallax.correlator.v1 import correlator_service_pb2 as pb

    if not follow:
        request = pb.ListIncidentsRequest(page_size=200)
        for item in _call(correlator, tls_dir, insecure, "ListIncidents", request).incidents:
            print(_json(item) if output_format == "json" else _incident_line("", item))
        return
    stream = _call(correlator, tls_dir, insecure, "WatchIncidents", pb.WatchIncidentsRequest())
    kinds = {1: "current", 3: "new", 4: "updated", 5: "resolved"}
    try:
        for change in stream:
            if change.HasField("incident"):
                kind = kinds.get(change.change_type, "?")
                line = (
                    _json(change)
                    if output_format == "json"
                    else _incident_line(kind, change.incident)
                )
                print(line, flush=True)
    except KeyboardInterrupt:
        return


def _incident_line(kind: str, item: Any) -> str:
    contained = " [contained]" if item.contained else ""
    prefix = f"{kind:8} " if kind else ""
    return f"{prefix}{SEVERITIES[item.severity]:8} {item.title}{contained}"


def vulns(
    target: str = typer.Argument(..., help="NAMESPACE/KIND/NAME, or `import` to import FILE."),
    file: Path | None = typer.Argument(None, help="The report to import (with `import`)."),
    image: str = typer.Option("", "--image", help="Image the report is about (with `import`)."),
    digest: str = typer.Option("", "--digest", help="Image digest, if the report lacks it."),
    report_format: str = typer.Option(
        "trivy", "--report-format", help="trivy, grype or cyclonedx."
    ),
    vex: Path | None = typer.Option(None, "--vex", help="Write NOT_IN_USE ones as OpenVEX here."),
    correlator: str = CorrelatorOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Import a scanner report (`vulns import FILE --image REF`) or show a workload's CVEs with
    their in-use verdicts (`vulns WORKLOAD [--vex FILE]`)."""
    from parallax.correlator.v1 import correlator_service_pb2 as pb

    if target == "import":
        if file is None or not image or report_format not in REPORT_FORMATS:
            _fail("usage: parallax vulns import FILE --image REF [--report-format FORMAT]")
        imported = pb.ImportVulnerabilityReportRequest(
            format=REPORT_FORMATS[report_format], image_ref=image,  # type: ignore[arg-type]
            image_digest=digest, content=file.read_bytes(),
        )  # fmt: skip
        done = _call(correlator, tls_dir, insecure, "ImportVulnerabilityReport", imported)
        report = done.vulnerability_report
        console.print(f"{report.name}: {report.vulnerability_count} vulnerabilities in "
                      f"{report.package_count} packages of {report.image_ref}")  # fmt: skip
        return
    ref = _workload(target)
    listing = pb.ListVulnerabilitiesRequest(workload=ref, page_size=1000)
    table = Table("verdict", "severity", "vulnerability", "package", "container", "why")
    for v in _call(correlator, tls_dir, insecure, "ListVulnerabilities", listing).vulnerabilities:
        table.add_row(USAGE.get(v.usage_verdict, "?"), SEVERITIES[v.severity], v.vulnerability_id,
                      f"{v.package_name} {v.package_version}", v.workload.container,
                      escape(v.verdict_reason))  # fmt: skip
    console.print(table)
    if vex is not None:
        answer = _call(
            correlator, tls_dir, insecure, "ExportVex", pb.ExportVexRequest(workload=ref)
        )
        vex.write_text(answer.openvex_json)
        errors.print(f"OpenVEX written to {vex}")


def register(app: typer.Typer) -> None:
    """Add the correlator commands to the `parallax` app."""
    for command in (risks, context, incidents, vulns):
        app.command()(command)
