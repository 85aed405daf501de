"""How `parallax` client commands reach a service: mutual TLS with the CLI's certificate (from
--tls-dir, PARALLAX_TLS_DIR, or DATA/tls/cli as `parallax up` writes it), or plaintext only when
--insecure / PARALLAX_INSECURE=true says so."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from servicekit.errors import ConfigError

if TYPE_CHECKING:  # grpc loads only when a command really connects: `parallax scan` starts fast
    import grpc

    from servicekit.tls import TlsMaterial

# The connection options every client command shares (reused, never copied, so they read alike).
RuntimeOption = typer.Option("127.0.0.1:50052", "--runtime", help="Runtime service address.")
TlsDirOption = typer.Option(
    None, "--tls-dir", help="Client certificate directory (tls.crt, tls.key, ca.crt)."
)
InsecureOption = typer.Option(False, "--insecure", help="Plaintext, for local development only.")


def material(
    tls_dir: Path | None, insecure: bool, data_dir: Path = Path("data")
) -> TlsMaterial | None:
    """Resolve the client's TLS material, or None for an explicit plaintext connection."""
    from servicekit.tls import TlsMaterial

    if insecure or os.environ.get("PARALLAX_INSECURE", "").lower() == "true":
        return None
    for candidate in (tls_dir, os.environ.get("PARALLAX_TLS_DIR"), data_dir / "tls" / "cli"):
        if candidate and Path(candidate, "tls.crt").exists():
            return TlsMaterial.load(Path(candidate))
    raise ConfigError(
        "no client certificate: pass --tls-dir, set PARALLAX_TLS_DIR, run `parallax certs init`, "
        "or use --insecure against a plaintext development server"
    )


def channel(address: str, tls: TlsMaterial | None, timeout: float = 10.0) -> grpc.Channel:
    """Open a traced channel with deadlines to `address` over mTLS (or plaintext for None)."""
    from servicekit.channels import connect

    credentials = tls.channel_credentials() if tls is not None else None
    return connect(address, timeout=timeout, credentials=credentials)
