"""The policy commands of `parallax`, in-process with --profile (no services needed): output on
stdout equal to the golden files, verification exit codes, and usage errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.__main__ import app
from services.policygen import seccomp
from tests.policygen.conftest import TESTDATA

runner = CliRunner()
PROFILE = str(TESTDATA / "profile-cart.json")
OBJECTS = str(TESTDATA / "objects.yaml")


@pytest.mark.parametrize(
    ("args", "golden"),
    [
        (["seccomp", "shop/Deployment/cart/server", "--profile", PROFILE], "cart.seccomp.json"),
        (
            ["seccomp", "shop/Deployment/cart/server", "--profile", PROFILE, "--audit"],
            "cart.seccomp-audit.json",
        ),
        (
            ["seccomp", "shop/Deployment/cart/server", "--profile", PROFILE, "--format", "spo"],
            "cart.seccompprofile.yaml",
        ),
        (
            ["netpol", "shop/Deployment/cart", "--profile", PROFILE, "--objects", OBJECTS],
            "cart.networkpolicy.yaml",
        ),
        (
            [
                "netpol",
                "shop/Deployment/cart",
                "--profile",
                PROFILE,
                "--objects",
                OBJECTS,
                "--format",
                "cilium",
            ],
            "cart.ciliumnetworkpolicy.yaml",
        ),
        (
            [
                "harden",
                "shop/Deployment/cart",
                "--profile",
                PROFILE,
                "--objects",
                OBJECTS,
                "--seccomp-profile",
                "operator/shop-cart-server.json",
            ],
            "cart.hardening.yaml",
        ),
    ],
    ids=["seccomp", "seccomp-audit", "seccomp-spo", "netpol", "netpol-cilium", "harden"],
)
def test_generation_prints_the_golden_output(args: list[str], golden: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == (TESTDATA / golden).read_text()


def test_netpol_verify_passes_on_the_generated_policy(tmp_path: Path) -> None:
    policy = tmp_path / "np.yaml"
    policy.write_text((TESTDATA / "cart.networkpolicy.yaml").read_text())
    args = [
        "netpol",
        "verify",
        str(policy),
        "--workload",
        "shop/Deployment/cart",
        "--profile",
        PROFILE,
        "--objects",
        OBJECTS,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(policy.read_text().replace("k8s-app: coredns", "k8s-app: kube-dns"))
    failed = runner.invoke(app, [*args[:2], str(broken), *args[3:]])
    assert failed.exit_code == 1 and "DENIED" in failed.stdout


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_seccomp_verify_runs_the_command(tmp_path: Path) -> None:
    from tests.policygen.test_enforcement import record

    profile = tmp_path / "true.json"
    profile.write_text(
        seccomp.generate(
            record(["/bin/true"], tmp_path / "t.log"), seccomp.SeccompOptions()
        ).oci_json()
    )
    passed = runner.invoke(app, ["seccomp", "verify", str(profile), "--", "/bin/true"])
    assert passed.exit_code == 0, passed.output
    assert "PASSED" in passed.stdout and "unshare refused" in passed.stdout
    failed = runner.invoke(app, ["seccomp", "verify", str(profile), "--", "/bin/echo", "hi"])
    assert failed.exit_code == 1 and "denied: write" in failed.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["seccomp", "not-a-workload", "--profile", PROFILE],
        ["seccomp", "verify"],
        ["netpol", "shop/Deployment/cart", "--profile", PROFILE],
    ],
    ids=["bad-workload", "verify-without-profile", "netpol-without-objects"],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 2
