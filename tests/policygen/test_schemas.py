"""Generated objects apply as-is: the NetworkPolicy, the SPO SeccompProfile and the OCI JSON
pass structural schemas written from their API references, and the schemas catch the mistakes
they are for (so a pass means something)."""

from __future__ import annotations

import json

import pytest
import yaml

from services.policygen import netpol, seccomp
from services.policygen.cluster import Cluster
from services.policygen.domain import Profile
from tests.policygen import schemas


def test_network_policy_fits_the_schema(cart: Profile, shop: Cluster) -> None:
    text = netpol.generate(cart.workload, [cart], shop, use_cilium=False).policy_yaml
    assert schemas.errors(yaml.safe_load(text), schemas.NETWORK_POLICY) == []


@pytest.mark.parametrize("audit", [False, True], ids=["enforce", "audit"])
def test_seccomp_renderings_fit_their_schemas(cart: Profile, audit: bool) -> None:
    generated = seccomp.generate(
        cart, seccomp.SeccompOptions(audit=audit, include_runtime_base=True)
    )
    assert schemas.errors(json.loads(generated.oci_json()), schemas.OCI_SECCOMP) == []
    assert schemas.errors(yaml.safe_load(generated.spo_yaml()), schemas.SPO_SECCOMP) == []


@pytest.mark.parametrize(
    ("document", "schema", "fragment"),
    [
        (
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "a", "namespace": "b"},
                "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {}}]}]},
            },
            schemas.NETWORK_POLICY,
            "missing cidr",
        ),
        (
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "a", "namespace": "b"},
                "spec": {"podSelector": {}, "egress": [{"toFQDNs": []}]},
            },
            schemas.NETWORK_POLICY,
            "unknown field toFQDNs",
        ),
        (
            {
                "apiVersion": "security-profiles-operator.x-k8s.io/v1",
                "kind": "SeccompProfile",
                "metadata": {"name": "a"},
                "spec": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1},
            },
            schemas.SPO_SECCOMP,
            "unknown field defaultErrnoRet",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}],
            },
            schemas.OCI_SECCOMP,
            "fewer than 1",
        ),
    ],
    ids=["ipblock-without-cidr", "cilium-field", "spo-errno", "empty-names"],
)
def test_schemas_catch_mistakes(
    document: dict[str, object], schema: dict[str, object], fragment: str
) -> None:
    assert any(fragment in e for e in schemas.errors(document, schema))
