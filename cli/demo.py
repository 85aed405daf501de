"""`parallax demo`: the whole loop on this machine. It starts the four services (mTLS) and the
node agent, runs the sample shop (examples/shop) as local pods, drives traffic, scans the
manifests, lets the profiles complete, generates and verifies policies, re-runs the app under
its seccomp profiles, attacks one pod, and reports (terminal and HTML). Without root it runs the
posture half only. Everything it starts it stops. Also registers `parallax report`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cli import report as report_command
from cli.demo_run import Run
from cli.demo_shop import Shop
from cli.report_model import Report
from cli.supervisor import StartError

console = Console()


def demo(
    data: Path = typer.Option(Path("data"), "--data", help="Data directory (SQLite, logs)."),
    learning_window: float = typer.Option(
        20.0, "--learning-window", min=1.0, help="Seconds without new behaviour to COMPLETE."
    ),
    html: Path = typer.Option(
        Path("parallax-report.html"), "--html", help="Where to write the HTML report."
    ),
) -> None:
    """Run Parallax end to end on the sample shop and write parallax-report.html."""
    started = time.monotonic()
    run = Run(data.resolve(), learning_window, console)
    if os.geteuid() != 0:
        console.print(
            "[yellow]The runtime half (eBPF agent, local pods, seccomp enforcement) needs root: "
            "running the posture half only. Run `sudo make demo` for the whole loop.[/yellow]"
        )
    try:
        found = run.posture_only() if os.geteuid() != 0 else Shop(run).everything()
    except (StartError, RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[red]demo failed: {escape(str(exc))}[/red]")
        console.print(f"logs are in {run.data / 'logs'}")
        raise typer.Exit(1) from None
    finish(found, run, html, time.monotonic() - started)


def finish(found: Report, run: Run, html: Path, elapsed: float) -> None:
    """Print the terminal report, save the snapshot and write the HTML report."""
    found.save(run.data / report_command.SNAPSHOT)
    report_command.print_terminal(found, console)
    report_command.write_html(found, html)
    console.print(
        f"HTML report: {html.resolve()} (demo took {elapsed:.0f}s; "
        f"`parallax report --data {run.data}` shows it again)"
    )


def register(app: typer.Typer) -> None:
    """Add `parallax demo` and `parallax report` to the `parallax` app."""
    app.command()(demo)
    report_command.register(app)
