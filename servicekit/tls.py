"""Mutual TLS material for servers and clients: read from a directory in cert-manager's Secret
layout (tls.crt, tls.key, ca.crt), turned into grpc credentials that require and verify the
peer's certificate. Plaintext is only ever an explicit choice (PARALLAX_INSECURE=true)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from servicekit.errors import ConfigError


@dataclass(frozen=True)
class TlsMaterial:
    """A component's certificate chain, private key and the CA that signs its peers."""

    certificate: bytes
    key: bytes
    ca: bytes

    @classmethod
    def load(cls, directory: Path) -> TlsMaterial:
        """Read tls.crt, tls.key and ca.crt from `directory`."""
        try:
            return cls(
                (directory / "tls.crt").read_bytes(),
                (directory / "tls.key").read_bytes(),
                (directory / "ca.crt").read_bytes(),
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot read TLS files in {directory} (tls.crt, tls.key, ca.crt): {exc.strerror}; "
                "run `parallax certs init` or mount the component's Secret there"
            ) from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for a server that requires a client certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for a client presenting this certificate and trusting only the CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.certificate
        )


def from_env(env: Mapping[str, str]) -> TlsMaterial | None:
    """TLS material from PARALLAX_TLS_DIR, or None when PARALLAX_INSECURE=true; one of the two
    must be set, so a component never falls back to plaintext by accident."""
    directory = env.get("PARALLAX_TLS_DIR")
    insecure = env.get("PARALLAX_INSECURE", "").lower() == "true"
    if directory and insecure:
        raise ConfigError("set PARALLAX_TLS_DIR or PARALLAX_INSECURE=true, not both")
    if directory:
        return TlsMaterial.load(Path(directory))
    if insecure:
        return None
    raise ConfigError(
        "PARALLAX_TLS_DIR is not set: give the directory of this component's certificate "
        "(tls.crt, tls.key, ca.crt), or PARALLAX_INSECURE=true for plaintext local development"
    )
