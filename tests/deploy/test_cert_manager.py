"""The cert-manager components: their objects are well-formed cert-manager.io/v1 (checked here
structurally, since no CRD schema is available offline), the CA chain is complete, and they
produce exactly the TLS Secrets the workloads mount, with the roles and DNS names the services
check. The csi-driver variant gives each agent pod its own certificate instead."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.supervisor import UPSTREAMS
from servicekit import pki
from tests.deploy.kustomize import Obj

GROUP = "cert-manager.io"
WITH_CERT_MANAGER = ("overlays/dev", "overlays/dev-csi-agent")
CSI_DRIVER = "csi.cert-manager.io"
# The variables csi-driver expands in common-name, dns-names and uri-sans (its documentation,
# "Variables"); any other is refused and the pod's volume never mounts.
CSI_VARIABLES = {"POD_NAME", "POD_NAMESPACE", "POD_UID", "SERVICE_ACCOUNT_NAME"}

# cert-manager.io/v1 fields these manifests may use, and their enumerations (cert-manager's API
# reference): enough to catch a misspelt or misplaced field, which the API server would refuse.
CERTIFICATE_FIELDS = {
    "secretName", "issuerRef", "commonName", "dnsNames", "uris", "ipAddresses", "usages",
    "duration", "renewBefore", "privateKey", "isCA", "subject", "secretTemplate",
}  # fmt: skip
REQUIRED_FIELDS = {"secretName", "issuerRef"}
ISSUER_REF_FIELDS = {"name", "kind", "group"}
PRIVATE_KEY = {
    "algorithm": {"RSA", "ECDSA", "Ed25519"},
    "encoding": {"PKCS1", "PKCS8"},
    "rotationPolicy": {"Never", "Always"},
}
SUBJECT_FIELDS = {
    "organizations", "countries", "organizationalUnits", "localities", "provinces",
    "streetAddresses", "postalCodes", "serialNumber",
}  # fmt: skip
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}  # fmt: skip
ISSUER_TYPES = {"selfSigned", "ca", "acme", "vault", "venafi"}
GO_DURATION = re.compile(r"(\d+(\.\d+)?(h|m|s|ms|us|ns))+")


def _hours(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", duration)
    return sum(float(n) * units[u] for n, u in parts) / 3600


def structure_errors(obj: Obj) -> list[str]:
    """What the API server would refuse in a cert-manager object, by the fields above."""
    kind, metadata, spec = obj["kind"], obj["metadata"], obj.get("spec", {})
    errors = [] if obj["apiVersion"] == f"{GROUP}/v1" else [f"apiVersion {obj['apiVersion']}"]
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        errors.append(f"top-level fields {sorted(set(obj) - {'apiVersion', 'kind'})}")
    if ("namespace" in metadata) != (kind != "ClusterIssuer"):
        errors.append("namespace: Issuers and Certificates need one, ClusterIssuers have none")
    if kind in ("Issuer", "ClusterIssuer"):
        if len(spec) != 1 or not set(spec) <= ISSUER_TYPES:
            errors.append(f"an issuer has exactly one type of {sorted(ISSUER_TYPES)}: {spec}")
        if "ca" in spec and set(spec["ca"]) != {"secretName"}:
            errors.append(f"ca issuer fields {sorted(spec['ca'])}")
        return errors
    if kind != "Certificate":
        return [*errors, f"unexpected kind {kind}"]
    return errors + _certificate_errors(spec)


def _certificate_errors(spec: dict[str, Any]) -> list[str]:
    errors = [f"unknown field {f}" for f in sorted(set(spec) - CERTIFICATE_FIELDS)]
    errors += [f"missing {f}" for f in sorted(REQUIRED_FIELDS - set(spec))]
    if not {"commonName", "dnsNames", "uris", "ipAddresses"} & set(spec):
        errors.append("no subject: commonName, dnsNames, uris or ipAddresses")
    reference = spec.get("issuerRef", {})
    if set(reference) - ISSUER_REF_FIELDS or reference.get("group", GROUP) != GROUP:
        errors.append(f"issuerRef {reference}")
    if reference.get("kind", "Issuer") not in ("Issuer", "ClusterIssuer"):
        errors.append(f"issuerRef kind {reference.get('kind')}")
    errors += [f"usage {u!r}" for u in spec.get("usages", []) if u not in KEY_USAGES]
    for field in ("duration", "renewBefore"):
        if field in spec and not GO_DURATION.fullmatch(spec[field]):
            errors.append(f"{field} {spec[field]!r} is not a Go duration")
    if "renewBefore" in spec and _hours(spec["renewBefore"]) >= _hours(spec["duration"]):
        errors.append("renewBefore is not shorter than duration")
    key = spec.get("privateKey", {})
    for field, value in key.items():
        if field != "size" and value not in PRIVATE_KEY.get(field, set()):
            errors.append(f"privateKey.{field} {value!r}")
    if set(spec.get("subject", {})) - SUBJECT_FIELDS:
        errors.append(f"subject fields {sorted(spec['subject'])}")
    if not isinstance(spec.get("isCA", False), bool):
        errors.append("isCA is not a boolean")
    for field in ("dnsNames", "uris", "usages"):
        if not isinstance(spec.get(field, []), list):
            errors.append(f"{field} is not a list")
    return errors


def _cert_manager(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["apiVersion"].startswith(f"{GROUP}/")]


def _certificates(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {
        (o["metadata"]["namespace"], o["spec"]["secretName"]): o
        for o in objects
        if o["kind"] == "Certificate"
    }


def _pod(objects: list[Obj], kind: str, name: str) -> Obj:
    workload = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("build", WITH_CERT_MANAGER)
def test_cert_manager_objects_are_well_formed(build: str, builds: dict[str, list[Obj]]) -> None:
    objects = _cert_manager(builds[build])
    assert {o["kind"] for o in objects} == {"Issuer", "ClusterIssuer", "Certificate"}
    for obj in objects:
        assert structure_errors(obj) == [], (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("dnsName",), ["posture"]),
        (("usages",), ["server-auth"]),
        (("privateKey", "algorithm"), "ecdsa"),
        (("renewBefore",), "30d"),
        (("issuerRef", "kind"), "Secret"),
    ],
    ids=["misspelt-field", "bad-usage", "bad-algorithm", "bad-duration", "bad-issuer-kind"],
)
def test_the_structure_check_catches_a_mistake(
    path: tuple[str, ...], value: object, full: list[Obj]
) -> None:
    certificate = next(o for o in full if o["kind"] == "Certificate")
    broken = {**certificate, "spec": {**certificate["spec"]}}
    target = broken["spec"]
    for part in path[:-1]:
        target[part] = dict(target[part])
        target = target[part]
    target[path[-1]] = value
    assert structure_errors(broken)


@pytest.mark.parametrize("build", WITH_CERT_MANAGER)
def test_every_certificate_chains_to_the_self_signed_parallax_ca(
    build: str, builds: dict[str, list[Obj]]
) -> None:
    objects = _cert_manager(builds[build])
    issuers = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["spec"]
        for o in objects
        if o["kind"] != "Certificate"
    }
    certificates = _certificates(objects)
    for (namespace, secret), certificate in certificates.items():
        reference = certificate["spec"]["issuerRef"]
        scope = namespace if reference["kind"] == "Issuer" else ""
        issuer = issuers[(reference["kind"], scope, reference["name"])]
        if certificate["spec"].get("isCA"):
            assert issuer == {"selfSigned": {}}, secret
        else:
            # A ClusterIssuer's CA key pair lives in cert-manager's cluster resource namespace.
            ca = certificates[("cert-manager", issuer["ca"]["secretName"])]
            assert ca["spec"]["isCA"] is True


@pytest.mark.parametrize("build", WITH_CERT_MANAGER)
def test_certificates_produce_exactly_the_secrets_the_workloads_mount(
    build: str, builds: dict[str, list[Obj]]
) -> None:
    objects = builds[build]
    mounted = {
        (o["metadata"]["namespace"], v["secret"]["secretName"])
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
        for v in o["spec"]["template"]["spec"]["volumes"]
        if "secret" in v and v["secret"]["secretName"].endswith("-tls")
    }
    issued = {key for key, c in _certificates(objects).items() if not c["spec"].get("isCA")}
    assert issued == mounted
    services = {("parallax", f"parallax-{s}-tls") for s in ("posture", "runtime", "policygen")}
    assert services | {("parallax", "parallax-correlator-tls")} <= mounted


def _identity(common_name: str, dns_names: list[str], uris: list[str]) -> x509.Certificate:
    """A certificate with these names, as the CA issuer would sign it for the request."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def _roles_and_node(common_name: str, dns_names: list[str], uris: list[str]) -> tuple[Any, str]:
    pem = _identity(common_name, dns_names, uris).public_bytes(serialization.Encoding.PEM)
    _, roles, node = pki.identity_of(pem)
    return roles, node


@pytest.mark.parametrize("component", ["posture", "runtime", "policygen", "correlator", "agent"])
def test_certificates_carry_the_roles_servicekit_reads(component: str, full: list[Obj]) -> None:
    namespace = "parallax-agent" if component == "agent" else "parallax"
    spec = _certificates(full)[(namespace, f"parallax-{component}-tls")]["spec"]
    roles, node = _roles_and_node(
        spec["commonName"], spec.get("dnsNames", []), spec.get("uris", [])
    )
    expected = {"agent"} if component == "agent" else set(pki.COMPONENT_ROLES[component])
    assert roles == expected
    assert node == ""  # a shared Secret names no node
    usages = set(spec["usages"])
    assert "client auth" in usages
    assert ("server auth" in usages) == (component != "agent")


def _host(address: str) -> str:
    return address.rpartition(":")[0]


def test_server_certificates_name_every_host_their_clients_dial(full: list[Obj]) -> None:
    certificates = _certificates(full)
    dialled = {
        ("runtime", _host(_env(_pod(full, "DaemonSet", "agent"))["PARALLAX_RUNTIME_ADDRESS"]))
    }
    correlator = _env(_pod(full, "Deployment", "correlator"))
    dialled |= {(up, _host(correlator[var])) for var, up in UPSTREAMS["correlator"].items()}
    for service, host in dialled:
        names = certificates[("parallax", f"parallax-{service}-tls")]["spec"]["dnsNames"]
        assert host in names, (service, host)
    services = {o["metadata"]["name"] for o in full if o["kind"] == "Service"}
    for service in services - {"postgres", "otel-collector"}:
        spec = certificates[("parallax", f"parallax-{service}-tls")]["spec"]
        assert f"{service}.parallax.svc" in spec["dnsNames"]


def _env(pod: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["containers"][0].get("env", [])}


def _csi_volume(objects: list[Obj]) -> Obj:
    pod = _pod(objects, "DaemonSet", "agent")
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tls"]
    assert mount["mountPath"] == _env(pod)["PARALLAX_TLS_DIR"] and mount["readOnly"] is True
    assert not [v for v in pod["volumes"] if "secret" in v]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    csi: Obj = volume["csi"]
    return csi


def test_the_csi_variant_gives_each_agent_pod_its_own_certificate(
    builds: dict[str, list[Obj]],
) -> None:
    objects = builds["overlays/dev-csi-agent"]
    csi = _csi_volume(objects)
    assert csi["driver"] == CSI_DRIVER and csi["readOnly"] is True
    attributes = csi["volumeAttributes"]
    prefix = f"{CSI_DRIVER}/"
    assert all(key.startswith(prefix) for key in attributes)
    issuer = (attributes[f"{prefix}issuer-kind"], attributes[f"{prefix}issuer-name"])
    assert issuer in {(o["kind"], o["metadata"]["name"]) for o in _cert_manager(objects)}
    assert issuer[0] == "ClusterIssuer"  # the agent's namespace has no Issuer of its own
    assert set(attributes[f"{prefix}key-usages"].split(",")) == {"digital signature", "client auth"}
    assert ("parallax-agent", "parallax-agent-tls") not in _certificates(objects)


def test_the_csi_certificate_names_carry_the_agent_role(builds: dict[str, list[Obj]]) -> None:
    attributes = _csi_volume(builds["overlays/dev-csi-agent"])["volumeAttributes"]
    pod = {"POD_NAME": "agent-x7k2p", "POD_NAMESPACE": "parallax-agent", "POD_UID": "u1"}
    pod["SERVICE_ACCOUNT_NAME"] = "agent"
    expanded = {}
    for key in ("common-name", "uri-sans"):
        value = attributes[f"{CSI_DRIVER}/{key}"]
        assert set(re.findall(r"\$\{(\w+)\}", value)) <= CSI_VARIABLES, value
        expanded[key] = re.sub(r"\$\{(\w+)\}", lambda m: pod[m.group(1)], value)
    uris = [u.strip() for u in expanded["uri-sans"].split(",")]
    roles, node = _roles_and_node(expanded["common-name"], [], uris)
    assert roles == {"agent"}
    assert node == ""  # csi-driver has no node variable: see the component's comment
    # the UID binds the certificate to this pod, not a later one of the same name
    assert "spiffe://parallax/pod/parallax-agent/agent-x7k2p/u1" in uris
