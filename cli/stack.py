"""`parallax up` and `parallax status`: run the four services locally as separate processes and
report their health."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.supervisor import SERVICES, Stack, StartError, announced

console = Console()

DataOption = typer.Option(Path("data"), "--data", help="Data directory (SQLite files, logs).")


def status_table(data_dir: Path) -> tuple[Table, bool]:
    """Build the status table of every service under `data_dir`; True when all are SERVING."""
    # grpc is imported here, not at module level: `parallax scan` must start fast without it.
    from cli.health import DOWN, SERVING, probe
    from servicekit.tls import TlsMaterial

    services = announced(data_dir)
    client_tls = data_dir / "tls" / "cli"
    table = Table("service", "address", "transport", "health")
    healthy = True
    for name in SERVICES:
        service = services.get(name)
        state = DOWN
        if service is not None:
            tls = TlsMaterial.load(client_tls) if service.tls else None
            state = probe(service.address, tls)
        healthy = healthy and state == SERVING
        colour = {"SERVING": "green", "DOWN": "red"}.get(state, "yellow")
        transport = "-" if service is None else ("mTLS" if service.tls else "plaintext")
        address = service.address if service else "-"
        table.add_row(name, address, transport, f"[{colour}]{state}[/{colour}]")
    return table, healthy


InsecureUpOption = typer.Option(
    False, "--insecure", help="Plaintext without authorization, for local development only."
)


def up(
    data: Path = DataOption,
    base_port: int = typer.Option(
        50051, "--base-port", help="Port of posture; the others follow. 0 picks free ports."
    ),
    insecure: bool = InsecureUpOption,
) -> None:
    """Start the four services on localhost with SQLite under --data, over mutual TLS with
    certificates under DATA/tls (created if missing); Ctrl-C stops them."""
    stack = Stack(data.resolve(), base_port=base_port, insecure=insecure)
    try:
        stack.start()
    except StartError as exc:
        console.print(f"[red]parallax up: {exc}[/red]")
        raise typer.Exit(1) from None
    table, healthy = status_table(stack.data_dir)
    console.print(table)
    console.print(f"logs in {stack.data_dir / 'logs'}; Ctrl-C or SIGTERM stops all services")
    reason = stack.wait() if healthy else "not every service is SERVING"
    console.print(f"stopping: {reason}")
    stack.stop()
    raise typer.Exit(0 if reason.startswith("received") else 1)


def status(data: Path = DataOption) -> None:
    """Show each service's name, address and health (SERVING, NOT_SERVING or DOWN)."""
    table, healthy = status_table(data.resolve())
    console.print(table)
    raise typer.Exit(0 if healthy else 1)


def register(app: typer.Typer) -> None:
    """Add the stack commands to the `parallax` app."""
    app.command()(up)
    app.command()(status)
