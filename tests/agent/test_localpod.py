"""Local pods: a command in its own cgroup v2 under parallax/<ns>/<pod>, a registry file for
attribution, and with --netns its own network namespace with a 198.18.0.0/15 address."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.attribution.pods import read_local
from agent.localpod import (
    REGISTRY,
    REGISTRY_RETENTION,
    LocalPod,
    cgroup2_mount,
    local_pod,
    prune_registry,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups and netns need root")


def test_command_runs_in_its_own_cgroup() -> None:
    with local_pod("shop", "cart", labels={"app": "cart"}) as pod:
        out = pod.spawn(["cat", "/proc/self/cgroup"], stdout=subprocess.PIPE).communicate(
            timeout=10
        )[0]
        entry = json.loads((REGISTRY / f"{pod.cgroup_id}.json").read_text())
        cgroup = pod.cgroup
    assert b"0::/parallax/shop/cart\n" in out
    assert cgroup.parent.parent == cgroup2_mount() / "parallax"
    assert entry["namespace"] == "shop" and entry["pod"] == "cart"
    assert entry["labels"] == {"app": "cart"} and entry["container"] == "main"
    assert not cgroup.exists()
    # The entry outlives the pod for REGISTRY_RETENTION, so late events are still attributed.
    ended = json.loads((REGISTRY / f"{pod.cgroup_id}.json").read_text())["ended"]
    prune_registry(now=ended + REGISTRY_RETENTION / 2)
    assert (REGISTRY / f"{pod.cgroup_id}.json").exists()
    prune_registry(now=ended + REGISTRY_RETENTION + 1)
    assert not (REGISTRY / f"{pod.cgroup_id}.json").exists()


def test_netns_pod_gets_a_veth_address() -> None:
    with local_pod("shop", "net", netns=True) as pod:
        out = pod.spawn(["ip", "-br", "-4", "addr"], stdout=subprocess.PIPE).communicate(
            timeout=10
        )[0]
        name = pod.netns_name
        address = ipaddress.ip_address(pod.address)
    assert address in ipaddress.ip_network("198.18.0.0/15")
    assert str(address).encode() in out
    assert not Path(f"/run/netns/{name}").exists()


def test_cli_run_exit_code() -> None:
    result = subprocess.run(
        [
            ".venv/bin/parallax",
            "run",
            "--namespace",
            "t",
            "--pod",
            "exit",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
        capture_output=True,
        timeout=30,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 3, result.stderr


DIGEST = "sha256:" + "0123456789abcdef" * 4
ROOT = Path(__file__).parents[2]


def test_image_digest_and_owner_registered_and_attributed() -> None:
    identity = {"image": "ghcr.io/acme/cart:1.4", "image_digest": DIGEST}
    with local_pod("shop", "cart-7", kind="Deployment", workload="cart", **identity) as pod:
        entry = json.loads((REGISTRY / f"{pod.cgroup_id}.json").read_text())
        attribution = read_local(REGISTRY, pod.cgroup_id, ("shop", "cart-7"))
    assert entry["image"] == "ghcr.io/acme/cart:1.4" and entry["image_digest"] == DIGEST
    assert (entry["kind"], entry["workload"]) == ("Deployment", "cart")
    assert attribution is not None
    assert (attribution.image, attribution.image_digest) == (identity["image"], DIGEST)
    ref = attribution.workload
    assert (ref.kind, ref.name, ref.pod) == ("Deployment", "cart", "cart-7")


@pytest.mark.parametrize(
    "identity",
    [
        {"image_digest": "sha256:abc"},
        {"image_digest": "0123456789abcdef" * 4},
        {"image_digest": DIGEST.upper()},
        {"kind": "Deployment"},
        {"workload": "cart"},
    ],
    ids=["short-digest", "no-algorithm", "uppercase", "kind-alone", "workload-alone"],
)
def test_bad_identity_refused_before_anything_is_made(identity: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"sha256|--kind and --workload"):
        LocalPod("shop", "refused", **identity)
    assert not (cgroup2_mount() / "parallax" / "shop" / "refused").exists()


def _cli_run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [".venv/bin/parallax", "run", *args], capture_output=True, timeout=30, cwd=ROOT
    )


def test_cli_run_registers_image_digest_and_owner() -> None:
    cgroup = cgroup2_mount() / "parallax" / "t" / "ident"
    # The pod reads its own registry entry: its cgroup id is its cgroup directory's inode.
    show = f"cat {REGISTRY}/$(stat -c %i {cgroup}).json"
    result = _cli_run(
        *("--namespace", "t", "--pod", "ident", "--image", "ghcr.io/acme/cart:1.4"),
        *("--image-digest", DIGEST, "--kind", "Deployment", "--workload", "cart"),
        *("--", "sh", "-c", show),
    )
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["image_digest"] == DIGEST and entry["image"] == "ghcr.io/acme/cart:1.4"
    assert (entry["kind"], entry["workload"]) == ("Deployment", "cart")


@pytest.mark.parametrize(
    "args",
    [["--image-digest", "sha256:abc"], ["--kind", "Deployment"]],
    ids=["bad-digest", "kind-without-workload"],
)
def test_cli_run_refuses_a_bad_identity(args: list[str]) -> None:
    result = _cli_run("--namespace", "t", "--pod", "bad", *args, "--", "true")
    assert result.returncode == 2
    assert b"sha256" in result.stderr or b"--kind and --workload" in result.stderr
