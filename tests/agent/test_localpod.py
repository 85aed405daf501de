"""Local pods: a command in its own cgroup v2 under parallax/<ns>/<pod>, a registry file for
attribution, and with --netns its own network namespace with a 198.18.0.0/15 address."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.localpod import REGISTRY, REGISTRY_RETENTION, cgroup2_mount, local_pod, prune_registry

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
