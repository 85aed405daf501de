"""A small certificate authority for Parallax components: `parallax certs init` and the tests
issue a CA and per-component certificates whose roles (and, for agents, node name) travel in the
certificate as `spiffe://parallax/role/<role>` and `spiffe://parallax/node/<node>` URI SANs; an
agent certificate from cert-manager's csi-driver names its pod instead,
`spiffe://parallax/pod/<namespace>/<name>[/<uid>]`. In Kubernetes the same files come from
Secrets or csi volumes (cert-manager layout: tls.crt, tls.key, ca.crt)."""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLE_PREFIX = "spiffe://parallax/role/"
NODE_PREFIX = "spiffe://parallax/node/"
POD_PREFIX = "spiffe://parallax/pod/"
# Kubernetes names: a namespace is a DNS label, a pod name a DNS subdomain, a UID a UUID.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_UID = re.compile(r"[0-9A-Za-z-]{1,64}")


@dataclass(frozen=True)
class PodRef:
    """A pod a certificate names: namespace and name, and the UID when the issuer put it in (so
    a later pod of the same name is not the same caller)."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.namespace, self.name, self.uid) if p)

    @property
    def uri(self) -> str:
        """The URI SAN that names this pod."""
        return POD_PREFIX + str(self)

    @classmethod
    def parse(cls, uri: str) -> PodRef | None:
        """The pod a `spiffe://parallax/pod/<namespace>/<name>[/<uid>]` URI names, or None when
        the URI is another kind or malformed (a malformed pod URI names no pod)."""
        if not uri.startswith(POD_PREFIX):
            return None
        parts = uri.removeprefix(POD_PREFIX).split("/")
        if len(parts) not in (2, 3) or not _NAMESPACE.fullmatch(parts[0]):
            return None
        if not _POD_NAME.fullmatch(parts[1]) or (len(parts) == 3 and not _UID.fullmatch(parts[2])):
            return None
        return cls(*parts)


@dataclass(frozen=True)
class Claims:
    """What a certificate says of its holder: common name, roles, node (agents with a node
    certificate) and pod (agents with a per-pod certificate; None when it names no single,
    well-formed pod)."""

    name: str
    roles: frozenset[str]
    node: str = ""
    pod: PodRef | None = None


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    certificate: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Parallax"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(
    common_name: str = "Parallax development CA",
    days: int = 365,
    *,
    now: datetime.datetime | None = None,
) -> Issued:
    """Create a self-signed CA certificate."""
    start = now or datetime.datetime.now(datetime.UTC)
    key = _key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue(
    ca: Issued,
    common_name: str,
    *,
    roles: Sequence[str],
    node: str = "",
    pod: PodRef | None = None,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 90,
    now: datetime.datetime | None = None,
) -> Issued:
    """Issue a certificate for a component: server and client use, its roles, node and pod as
    URI SANs, `hosts` as DNS or IP SANs."""
    start = now or datetime.datetime.now(datetime.UTC)
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    key = _key()
    names: list[x509.GeneralName] = [_host(h) for h in hosts]
    names += [x509.UniformResourceIdentifier(ROLE_PREFIX + role) for role in roles]
    if node:
        names.append(x509.UniformResourceIdentifier(NODE_PREFIX + node))
    if pod is not None:
        names.append(x509.UniformResourceIdentifier(pod.uri))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _host(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write(directory: Path, issued: Issued, ca: Issued) -> Path:
    """Write `tls.crt`, `tls.key` (mode 0600) and `ca.crt` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(issued.certificate)
    _write_key(directory / "tls.key", issued.key)
    (directory / "ca.crt").write_bytes(ca.certificate)
    return directory


def _write_key(path: Path, key: bytes) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(key)


def identity_of(certificate_pem: bytes) -> tuple[str, frozenset[str], str]:
    """Return (common name, roles, node) carried by a certificate; `claims_of` adds the pod."""
    claims = claims_of(certificate_pem)
    return claims.name, claims.roles, claims.node


def claims_of(certificate_pem: bytes) -> Claims:
    """Everything a certificate says of its holder. Two different pod URIs name no pod: which
    one the holder is cannot be told, and the caller must not get to pick."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(attributes[0].value) if attributes else ""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Claims(common_name, frozenset())
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    roles = frozenset(u.removeprefix(ROLE_PREFIX) for u in uris if u.startswith(ROLE_PREFIX))
    nodes = [u.removeprefix(NODE_PREFIX) for u in uris if u.startswith(NODE_PREFIX)]
    pods = {u for u in uris if u.startswith(POD_PREFIX)}
    pod = PodRef.parse(pods.pop()) if len(pods) == 1 else None
    return Claims(common_name, roles, nodes[0] if nodes else "", pod)


# The development set `parallax certs init` and `parallax up` issue: each service's certificate
# serves its port and, for the correlator, carries the role it calls the others with.
COMPONENT_ROLES: dict[str, tuple[str, ...]] = {
    "posture": (),
    "runtime": (),
    "policygen": ("reader",),  # reads runtime profiles
    "correlator": ("correlator",),
    "cli": ("operator", "reader"),
}


def init_directory(directory: Path, *, node: str, hosts: Sequence[str] = ()) -> list[Path]:
    """Create a CA and the development certificates under `directory` (one sub-directory per
    component in Secret layout, plus `agent-<node>`); keep an existing CA and certificates."""
    ca_dir = directory / "ca"
    if (ca_dir / "ca.key").exists():
        ca = Issued((ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes())
    else:
        ca = create_ca()
        ca_dir.mkdir(parents=True, exist_ok=True)
        (ca_dir / "ca.crt").write_bytes(ca.certificate)
        _write_key(ca_dir / "ca.key", ca.key)
    names = {
        **{c: (roles, "") for c, roles in COMPONENT_ROLES.items()},
        f"agent-{node}": (("agent",), node),
    }
    written = []
    for component, (roles, agent_node) in names.items():
        target = directory / component
        if not (target / "tls.crt").exists():
            all_hosts = ("localhost", "127.0.0.1", component, f"parallax-{component}", *hosts)
            write(target, issue(ca, component, roles=roles, node=agent_node, hosts=all_hosts), ca)
        written.append(target)
    return written
