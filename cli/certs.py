"""`parallax certs init`: a local CA and per-component certificates for development, in the
Secret layout Kubernetes deployments mount (tls.crt, tls.key, ca.crt)."""

from __future__ import annotations

import socket
from pathlib import Path

import typer
from rich.console import Console

console = Console()
app = typer.Typer(help="Certificates for mutual TLS between components.", no_args_is_help=True)


@app.command("init")
def init(
    directory: Path = typer.Option(Path("data/tls"), "--dir", help="Where to write them."),
    node: str = typer.Option("", "--node", help="Node name in the agent's certificate."),
    host: list[str] = typer.Option([], "--host", help="Extra DNS name or IP for every server."),
) -> None:
    """Create the CA (kept if present) and the certificates of posture, runtime, policygen,
    correlator, the CLI (operator, reader) and one agent (its node in the certificate)."""
    from servicekit import pki  # cryptography loads only for this command

    written = pki.init_directory(directory, node=node or socket.gethostname(), hosts=host)
    for path in written:
        console.print(f"{path.name:>12}  {path}")


def register(parent: typer.Typer) -> None:
    """Add `certs` to the `parallax` app."""
    parent.add_typer(app, name="certs")
