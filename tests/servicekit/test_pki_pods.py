"""Pod identities in certificates: `spiffe://parallax/pod/<namespace>/<name>[/<uid>]` parses
into a PodRef, anything malformed or ambiguous names no pod, and the older (name, roles, node)
reading of a certificate is unchanged."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from servicekit import authz, pki
from servicekit.pki import PodRef

UID = "4f1c2a9e-6b1d-4c8e-9a55-0d3f7e2b8c11"


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.create_ca()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("spiffe://parallax/pod/parallax-agent/agent-x7k2p",
         PodRef("parallax-agent", "agent-x7k2p")),
        (f"spiffe://parallax/pod/parallax-agent/agent-x7k2p/{UID}",
         PodRef("parallax-agent", "agent-x7k2p", UID)),
        ("spiffe://parallax/pod/ns/a.b-c", PodRef("ns", "a.b-c")),
        ("spiffe://parallax/pod/parallax-agent", None),
        ("spiffe://parallax/pod/parallax-agent/", None),
        ("spiffe://parallax/pod//agent", None),
        (f"spiffe://parallax/pod/parallax-agent/agent/{UID}/extra", None),
        ("spiffe://parallax/pod/Parallax/agent", None),
        ("spiffe://parallax/pod/ns/agent%2F..", None),
        ("spiffe://parallax/pod/ns/agent/uid with space", None),
        ("spiffe://parallax/pod/ns/" + "a" * 254, None),
        ("spiffe://parallax/node/n1", None),
    ],
    ids=["name", "name-uid", "dotted-name", "no-name", "empty-name", "empty-namespace",
         "extra-segment", "upper-case", "escaped", "bad-uid", "too-long", "node-uri"],
)  # fmt: skip
def test_pod_uris_parse_strictly(uri: str, expected: PodRef | None) -> None:
    assert PodRef.parse(uri) == expected


def test_an_issued_pod_certificate_reads_back(ca: pki.Issued) -> None:
    pod = PodRef("parallax-agent", "agent-x7k2p", UID)
    issued = pki.issue(ca, "agent-agent-x7k2p", roles=["agent"], pod=pod)
    claims = pki.claims_of(issued.certificate)
    assert claims == pki.Claims("agent-agent-x7k2p", frozenset({"agent"}), "", pod)
    assert pki.identity_of(issued.certificate) == ("agent-agent-x7k2p", frozenset({"agent"}), "")
    assert pod.uri == f"spiffe://parallax/pod/parallax-agent/agent-x7k2p/{UID}"


def test_a_node_certificate_names_no_pod(ca: pki.Issued) -> None:
    issued = pki.issue(ca, "agent-n1", roles=["agent"], node="n1")
    assert pki.claims_of(issued.certificate).pod is None
    assert pki.identity_of(issued.certificate) == ("agent-n1", frozenset({"agent"}), "n1")


def _with_uris(ca: pki.Issued, *uris: str) -> bytes:
    """A certificate with exactly these URI SANs, as another issuer might write one."""
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.UniformResourceIdentifier(u) for u in uris]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_certificate.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_two_different_pods_name_no_pod(ca: pki.Issued) -> None:
    pem = _with_uris(
        ca,
        "spiffe://parallax/role/agent",
        "spiffe://parallax/pod/parallax-agent/agent-a",
        "spiffe://parallax/pod/parallax-agent/agent-b",
    )
    assert pki.claims_of(pem) == pki.Claims("", frozenset({"agent"}))


def test_the_same_pod_twice_is_one_pod(ca: pki.Issued) -> None:
    uri = "spiffe://parallax/pod/parallax-agent/agent-a"
    assert pki.claims_of(_with_uris(ca, uri, uri)).pod == PodRef("parallax-agent", "agent-a")


def test_the_caller_identity_carries_the_pod(ca: pki.Issued) -> None:
    pod = PodRef("parallax-agent", "agent-a")
    pem = pki.issue(ca, "agent-a", roles=["agent"], pod=pod).certificate
    assert authz._parse(pem) == authz.Identity("agent-a", frozenset({"agent"}), "", pod)
