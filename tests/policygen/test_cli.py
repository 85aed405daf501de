"""The policy commands of `parallax`, in-process with --profile (no services needed): output on
stdout equal to the golden files, verification exit codes, and usage errors; and through a real
policygen server with the shared connection options (--insecure to a plaintext one, --tls-dir to
an mTLS one)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from parallax.runtime.v1 import profile_pb2
from parallax.type.v1 import workload_pb2
from typer.testing import CliRunner

from cli.__main__ import app
from servicekit import pki, serve
from servicekit.errors import FailedPrecondition
from servicekit.tls import TlsMaterial
from services.policygen import seccomp
from services.policygen.servicer import PolicygenServicer, registration
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


# Each command once, through a policygen server (--profile inline, so no runtime is dialled).
THROUGH_SERVER = [
    (["seccomp", "shop/Deployment/cart/server", "--profile", PROFILE], "cart.seccomp.json"),
    (
        ["netpol", "shop/Deployment/cart", "--profile", PROFILE, "--objects", OBJECTS],
        "cart.networkpolicy.yaml",
    ),
    (
        [
            *("harden", "shop/Deployment/cart", "--profile", PROFILE, "--objects", OBJECTS),
            *("--seccomp-profile", "operator/shop-cart-server.json"),
        ],
        "cart.hardening.yaml",
    ),
]


def _no_profile_fetched(ref: workload_pb2.WorkloadRef, digest: str = "") -> profile_pb2.Profile:
    raise FailedPrecondition("the test server fetches no profile: pass --profile")


@contextmanager
def _policygen(tls: TlsMaterial | None) -> Iterator[str]:
    servicer = PolicygenServicer(_no_profile_fetched, lambda ref: [_no_profile_fetched(ref)])
    running = serve.start(
        [registration(servicer)], listen="127.0.0.1:0", tracer_provider=TracerProvider(), tls=tls
    )
    try:
        yield running.address
    finally:
        running.stop(grace=1)


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Only the command's options choose the connection: no environment, no data/tls/cli."""
    monkeypatch.delenv("PARALLAX_INSECURE", raising=False)
    monkeypatch.delenv("PARALLAX_TLS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("args", "golden"), THROUGH_SERVER, ids=["seccomp", "netpol", "harden"])
def test_insecure_reaches_a_plaintext_policygen(
    args: list[str], golden: str, no_ambient_credentials: Path
) -> None:
    with _policygen(None) as address:
        plain = runner.invoke(app, [*args, "--policygen", address, "--insecure"])
        refused = runner.invoke(app, [*args, "--policygen", address])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == (TESTDATA / golden).read_text()
    assert refused.exit_code == 2
    assert "no client certificate" in refused.output and "--insecure" in refused.output


@pytest.mark.parametrize(("args", "golden"), THROUGH_SERVER, ids=["seccomp", "netpol", "harden"])
def test_tls_dir_reaches_an_mtls_policygen(
    args: list[str], golden: str, no_ambient_credentials: Path
) -> None:
    certs = no_ambient_credentials / "certs"
    pki.init_directory(certs, node="node-a")
    with _policygen(TlsMaterial.load(certs / "policygen")) as address:
        port = address.rsplit(":", 1)[1]
        target = f"localhost:{port}"  # the name the development certificates carry
        secure = runner.invoke(app, [*args, "--policygen", target, "--tls-dir", str(certs / "cli")])
        plaintext = runner.invoke(app, [*args, "--policygen", target, "--insecure"])
    assert secure.exit_code == 0, secure.output
    assert secure.stdout == (TESTDATA / golden).read_text()
    assert plaintext.exit_code == 2, "a plaintext client cannot reach an mTLS server"
