"""Hardening patches from evidence: the golden patch of the cart workload (every line carries
its evidence and the YAML parses back to the patch), and each change skipped for the evidence
that forbids it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import yaml

from services.policygen import hardening
from services.policygen.cluster import Cluster
from services.policygen.domain import (
    Capability,
    FileOpen,
    Profile,
    ProfileState,
    Readiness,
    UserId,
)

SECCOMP = "operator/shop-cart-server.json"


def harden(profile: Profile, shop: Cluster, seccomp: str = SECCOMP) -> hardening.Hardening:
    manifest = shop.workload("shop", "Deployment", "cart")
    return hardening.harden(profile.workload, [profile], manifest, seccomp)


def test_patch_matches_the_golden_file(
    cart: Profile, shop: Cluster, golden: Callable[[str, str], None]
) -> None:
    result = harden(cart, shop)
    golden("cart.hardening.yaml", result.yaml_text)
    patch = yaml.safe_load(result.yaml_text)
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "server"
    context = container["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert context["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "parallax-server-0", "mountPath": "/tmp"}]
    assert patch["spec"]["template"]["spec"]["volumes"] == [
        {"name": "parallax-server-0", "emptyDir": {}}
    ]
    assert patch["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert context["seccompProfile"] == {"type": "Localhost", "localhostProfile": SECCOMP}
    assert all(c.evidence for c in result.changes if "volume" not in c.field_path)
    assert result.readiness is Readiness.UNVERIFIED and not result.skipped


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            {"user_ids": (UserId(0, 0, ("/docker-entrypoint.sh",)),)},
            "runAsNonRoot",
            "uid 0 observed for /docker-entrypoint.sh",
        ),
        (
            {"user_ids": (UserId(1000, 0, ("/usr/bin/sudo",)),)},
            "allowPrivilegeEscalation",
            "setuid transition observed (/usr/bin/sudo)",
        ),
        (
            {
                "file_opens": (
                    FileOpen(
                        "/var/run/secrets/kubernetes.io/serviceaccount/token", False, ("/app",)
                    ),
                )
            },
            "automountServiceAccountToken",
            "the service account token was read (/app)",
        ),
        (
            {"file_opens": (FileOpen("/app/data/cache.db", True),)},
            "readOnlyRootFilesystem",
            "writes to /app/data",
        ),
    ],
    ids=["root", "setuid", "token", "image-dir-write"],
)
def test_skipped_changes_say_why(
    cart: Profile, shop: Cluster, change: dict[str, object], field: str, reason: str
) -> None:
    result = harden(dataclasses.replace(cart, **change), shop)  # type: ignore[arg-type]
    skipped = [s for s in result.skipped if s.field_path.endswith(field)]
    assert skipped and reason in skipped[0].reason
    assert field not in result.yaml_text


def test_writes_to_mounted_volumes_do_not_block_a_read_only_root(
    cart: Profile, shop: Cluster
) -> None:
    profile = dataclasses.replace(cart, file_opens=(FileOpen("/etc/cart/state", True),))
    result = harden(profile, shop)
    assert "readOnlyRootFilesystem: true" in result.yaml_text
    assert "volumeMounts" not in result.yaml_text


def test_partial_profile_is_insufficient_evidence(cart: Profile, shop: Cluster) -> None:
    profile = dataclasses.replace(cart, state=ProfileState.PARTIAL, state_reason="PARTIAL: drops")
    result = harden(profile, shop, seccomp="")
    assert result.readiness is Readiness.INSUFFICIENT_EVIDENCE
    assert "seccompProfile" not in result.yaml_text


def test_without_a_manifest_profiles_give_the_containers(cart: Profile) -> None:
    result = hardening.harden(cart.workload, [cart], None, "")
    assert (
        yaml.safe_load(result.yaml_text)["spec"]["template"]["spec"]["containers"][0]["name"]
        == "server"
    )


def test_capabilities_only_the_container_runtime_checked_are_not_granted(
    cart: Profile, shop: Cluster
) -> None:
    """runc init's mounts and setns check CAP_SYS_ADMIN before the first exec: that is no
    evidence the workload needs it, so it is dropped with the rest and named as set-up."""
    setup = Capability("CAP_SYS_ADMIN", allowed=2, runtime_startup=True)
    result = harden(dataclasses.replace(cart, capabilities=(*cart.capabilities, setup)), shop)
    container = yaml.safe_load(result.yaml_text)["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    drop = next(c for c in result.changes if c.field_path.endswith("drop"))
    assert "SYS_ADMIN only by the container runtime before the first exec" in drop.evidence
