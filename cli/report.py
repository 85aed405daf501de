"""`parallax report [--html FILE]`: the unified view of posture, runtime, policies and the
correlator's verdicts, risks and incidents, read from the running services (or, when none runs,
from the last demo's DATA/report.json). A concise terminal report, and one self-contained HTML
file with --html. `parallax demo` prints and writes the same."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cli import report_html
from cli.report_model import SEVERITIES, Report

SNAPSHOT = "report.json"
COLOURS = {"CRITICAL": "bold red", "HIGH": "red", "MEDIUM": "yellow", "LOW": "dim"}


def _sev(value: str) -> str:
    colour = COLOURS.get(value, "")
    return f"[{colour}]{value}[/{colour}]" if colour else value


def _risks(report: Report, console: Console) -> None:
    if report.risks:
        console.print("[bold]Risk ranking[/bold]")
    for r in report.risks:
        top = "; ".join(t.explanation for t in r.terms[:2] if t.contribution > 0)
        console.print(
            f"  #{r.rank} {escape(r.workload)} {r.score:.0f}/100 {_sev(r.severity)}: {escape(top)}"
        )


def _findings(report: Report, console: Console) -> None:
    counts = Counter(f.severity for f in report.findings)
    verdicts = Counter(f.verdict for f in report.findings if f.verdict)
    by_severity = [f"{counts[s]} {s}" for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW") if counts[s]]
    judged = [f"{n} {v}" for v, n in sorted(verdicts.items())]
    console.print(
        f"[bold]Findings[/bold] {len(report.findings)} ({', '.join(by_severity)})"
        + (f"; runtime verdicts: {', '.join(judged)}" if judged else "")
    )
    for f in report.findings:
        if f.verdict in ("EXERCISED", "NOT_EXERCISED") and f.severity in ("HIGH", "CRITICAL"):
            console.print(
                f"  {f.control_id} {escape(f.workload)}: {escape(f.message)} -> [bold]{f.verdict}"
                f"[/bold] ({escape(f.verdict_reason)})"
            )


def _runtime(report: Report, console: Console) -> None:
    if report.profiles:
        console.print("[bold]Profiles[/bold]")
    for p in report.profiles:
        caps = ", ".join(p.capabilities) or "no capabilities"
        console.print(
            f"  {escape(p.workload)} ({p.container}): {p.state}, {p.syscalls} syscalls, "
            f"{len(p.executables)} executables, {len(p.peers)} peers, {caps}"
        )
    if report.alerts:
        console.print("[bold]Alerts[/bold]")
    grouped: dict[str, list[str]] = {}
    for a in report.alerts:
        grouped.setdefault(a.rule_id, []).append(a.message)
    for rule_id, messages in sorted(grouped.items()):
        first = next(a for a in report.alerts if a.rule_id == rule_id)
        more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
        console.print(f"  {rule_id} {_sev(first.severity)} {escape(messages[0])}{more}")


def _policies(report: Report, console: Console) -> None:
    if report.policies:
        console.print("[bold]Policies[/bold]")
    marks = {True: "[green]verified[/green]", False: "[red]FAILED[/red]"}
    for pol in report.policies:
        mark = marks[pol.verified] if pol.verified is not None else "generated"
        console.print(
            f"  {pol.kind:<13} {escape(pol.workload)}: {mark} ({pol.readiness}) "
            f"{escape(pol.verification)}"
        )
    for flow in report.flows:
        verdict = (
            "not judged" if flow.allowed is None else ("allowed" if flow.allowed else "DENIED")
        )
        console.print(
            f"  flow {escape(flow.source)} -> {escape(flow.destination)}:{flow.port} {verdict}"
        )


def _incidents(report: Report, console: Console, shown: int = 2) -> None:
    ranked = sorted(report.incidents, key=lambda i: -SEVERITIES.index(i.severity))
    for i in ranked[:shown]:
        console.print(f"[bold]Incident[/bold] {_sev(i.severity)} {escape(i.title)}")
        for line in [*i.escalation_reasons, *i.attack_path]:
            console.print(f"  - {escape(line)}")
    if len(ranked) > shown:
        titles = Counter(i.title for i in ranked[shown:])
        rest = "; ".join(f"{t} x{n}" if n > 1 else t for t, n in titles.items())
        console.print(f"  +{len(ranked) - shown} more incidents: {escape(rest)}")


def print_terminal(report: Report, console: Console) -> None:
    """The concise terminal report: one block per section, the pending ones named."""
    console.rule(f"[bold]{escape(report.title)}")
    for section in (_risks, _findings, _runtime, _policies, _incidents):
        section(report, console)
    for name, reason in report.pending.items():
        console.print(f"[yellow]pending[/yellow] {name}: {escape(reason)}")


def write_html(report: Report, path: Path) -> None:
    """Write the self-contained HTML report."""
    path.write_text(report_html.render(report), encoding="utf-8")


def gather(data: Path, tls_dir: Path | None, insecure: bool) -> Report:
    """The report from the services running under `data`, else the saved snapshot."""
    from cli.connection import material
    from cli.report_collect import Collector
    from cli.supervisor import announced

    services = {name: a.address for name, a in announced(data).items()}
    snapshot = data / SNAPSHOT
    if not services and snapshot.exists():
        saved = Report.load(snapshot)
        saved.title += " (saved by the last demo; no service is running)"
        return saved
    return Collector(services, material(tls_dir, insecure, data)).collect()


def report(
    data: Path = typer.Option(Path("data"), "--data", help="Data directory of `parallax up`."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML file."),
    tls_dir: Path | None = typer.Option(None, "--tls-dir", help="Client certificate directory."),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext, for development only."),
) -> None:
    """Show posture, runtime, policies, risks and incidents in one view."""
    from servicekit.errors import ConfigError

    try:
        found = gather(data.resolve(), tls_dir, insecure)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]parallax report: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    print_terminal(found, Console())
    if html is not None:
        write_html(found, html)
        Console().print(f"HTML report: {html}")


def register(app: typer.Typer) -> None:
    """Add `parallax report`."""
    app.command()(report)
