"""`parallax agent check`: the checks that need nothing pass or repair, the header link is made
like scripts/setup.sh does (newest version first, with its own -common directory), root without
a needed capability fails naming it (run under setpriv), the program load includes a cgroup
socket program, and on a root machine with BCC the BPF self-test matches /proc."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent import btf, check
from cli.__main__ import app
from tests.agent.conftest import ebpf_unavailable
from tests.agent.test_agent_process import daemonset_capabilities

ROOT = Path(__file__).parents[2]
# Python that prints check Results as JSON lists, for the setpriv'd children.
SHOW = (
    "import json, dataclasses; from agent import check\n"
    "show = lambda *r: print(json.dumps([dataclasses.astuple(x) for x in r]))\nshow"
)


def test_headers_are_linked_from_installed_debian_headers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("linux-headers-6.1.0-9-amd64", "linux-headers-6.1.0-9-common"):
        (src / name / "include").mkdir(parents=True)
    result = check.check_headers(tmp_path / "modules", src)
    build = tmp_path / "modules" / platform.release() / "build"
    assert result.ok and build.resolve() == src / "linux-headers-6.1.0-9-amd64"
    assert (build.parent / "source").resolve() == src / "linux-headers-6.1.0-9-common"


def test_missing_headers_name_the_fix(tmp_path: Path) -> None:
    result = check.check_headers(tmp_path / "modules", tmp_path / "empty")
    assert not result.ok and "apt-get install linux-headers-amd64" in result.detail


def test_btf_offsets_are_parsed_and_cached(tmp_path: Path) -> None:
    if not btf.VMLINUX.exists():
        pytest.skip("this kernel exposes no BTF")
    found = btf.offsets(["task_struct.tgid", "mnt_namespace.ns.inum"], cache_dir=tmp_path)
    assert found["task_struct.tgid"] > 0 and list(tmp_path.glob("*.json"))
    with pytest.raises(btf.BtfError, match="no member"):
        btf.offsets(["task_struct.no_such_member"], cache_dir=tmp_path)


@pytest.mark.ebpf
def test_self_test_passes() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    results = check.run_checks()
    assert [r.name for r in results if not r.ok] == []
    assert results[-1].name == "self-test"


@pytest.mark.ebpf
def test_cli_check() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    result = CliRunner().invoke(app, ["agent", "check"])
    assert result.exit_code == 0, result.output


def test_headers_pick_the_newest_version_and_its_own_common(tmp_path: Path) -> None:
    src = tmp_path / "src"
    versions = ("6.1.0-9", "6.1.0-57", "6.1.0-10")
    for version in versions:
        for flavour in ("amd64", "common"):
            (src / f"linux-headers-{version}-{flavour}" / "include").mkdir(parents=True)
    (src / "linux-headers-6.1.0-100-common" / "include").mkdir(parents=True)  # no -amd64 pair
    result = check.check_headers(tmp_path / "modules", src)
    build = tmp_path / "modules" / platform.release() / "build"
    assert result.ok and build.resolve() == src / "linux-headers-6.1.0-57-amd64"
    assert (build.parent / "source").resolve() == src / "linux-headers-6.1.0-57-common"


def test_headers_without_a_common_directory_use_the_arch_one(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "linux-headers-6.1.0-57-amd64" / "include").mkdir(parents=True)
    (src / "linux-headers-6.1.0-9-common" / "include").mkdir(parents=True)
    assert check.newest_headers(src) == (src / "linux-headers-6.1.0-57-amd64",) * 2


def _as(capabilities: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run Python `code` as root with only `capabilities` (setpriv cuts the bounding set, and
    with it root's effective set at exec)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    bounding = ",".join(["-all", *(f"+{c}" for c in capabilities)])
    return subprocess.run(
        ["setpriv", f"--bounding-set={bounding}", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def _privileges(capabilities: list[str]) -> check.Result:
    code = f"{SHOW}(check.check_privileges())"
    ran = _as(capabilities, code)
    assert ran.returncode == 0, ran.stderr
    ((name, ok, detail),) = json.loads(ran.stdout)
    return check.Result(name, ok, detail)


def _syslog_needed() -> bool:
    return check.CAP_SYSLOG in check.needed_capabilities()


@pytest.mark.parametrize(
    ("missing", "why"),
    [
        ("bpf", "loading any program or map"),
        ("perfmon", "attaching tracing programs"),
        ("net_admin", "the network and DNS probes' cgroup socket programs"),
        ("syslog", "/proc/kallsyms"),
    ],
    ids=["bpf", "perfmon", "net_admin", "syslog"],
)
def test_root_without_a_needed_capability_fails_naming_it(missing: str, why: str) -> None:
    if missing == "syslog" and not _syslog_needed():
        pytest.skip("this kernel shows /proc/kallsyms addresses without CAP_SYSLOG")
    result = _privileges([c for c in daemonset_capabilities() if c != missing])
    assert not result.ok
    assert result.detail.startswith(f"Missing CAP_{missing.upper()} (needed for ")
    assert why in result.detail
    assert result.detail.endswith(".") and ". " not in result.detail  # one sentence


def test_the_daemonset_capabilities_pass_the_privilege_check() -> None:
    result = _privileges(daemonset_capabilities())
    assert result.ok, result.detail


def test_kallsyms_names_cap_syslog_when_it_is_the_cause() -> None:
    if not _syslog_needed() or Path("/proc/sys/kernel/kptr_restrict").read_text().strip() == "2":
        pytest.skip("CAP_SYSLOG is not what decides /proc/kallsyms here")
    code = f"{SHOW}(check.check_kallsyms())"
    ran = _as([c for c in daemonset_capabilities() if c != "syslog"], code)
    ((_, ok, detail),) = json.loads(ran.stdout)
    assert not ok and "grant it CAP_SYSLOG" in detail


@pytest.mark.ebpf
def test_the_program_load_attaches_a_cgroup_socket_program() -> None:
    """With every capability but NET_ADMIN the trivial tracing program loads, yet the cgroup
    socket program does not: the load step fails, naming CAP_NET_ADMIN."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    code = f"{SHOW}(*check.self_test())"
    ran = _as([c for c in daemonset_capabilities() if c != "net_admin"], code)
    assert ran.returncode == 0, ran.stderr
    ((name, ok, detail),) = json.loads(ran.stdout)
    assert (name, ok) == ("program load", False)
    assert "CGROUP_SOCK_ADDR" in detail and "grant CAP_NET_ADMIN" in detail


@pytest.mark.ebpf
def test_cli_check_passes_with_the_daemonset_capabilities() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    ran = _as(daemonset_capabilities(), "from cli.__main__ import app; app(['agent', 'check'])")
    assert ran.returncode == 0, ran.stderr
    assert "cgroup socket programs loaded and attached" in ran.stderr


@pytest.mark.ebpf
def test_cli_check_fails_naming_the_missing_capability() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    kept = [c for c in daemonset_capabilities() if c != "net_admin"]
    ran = _as(kept, "from cli.__main__ import app; app(['agent', 'check'])")
    assert ran.returncode == 1
    assert "FAIL privileges: Missing CAP_NET_ADMIN" in ran.stderr


@pytest.mark.parametrize(
    ("release", "memlock", "needed"),
    [
        ("5.10.0-21-amd64", 8 * 1024 * 1024, True),
        ("5.10.0-21-amd64", resource.RLIM_INFINITY, False),
        ("5.11.0", 8 * 1024 * 1024, False),
        ("6.1.0-57-amd64", 8 * 1024 * 1024, False),
    ],
    ids=["5.10-finite", "5.10-unlimited", "5.11", "6.1"],
)
def test_sys_resource_only_where_memlock_limits_bpf(
    release: str, memlock: int, needed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check.resource, "getrlimit", lambda _: (memlock, memlock))
    assert (check.CAP_SYS_RESOURCE in check.needed_capabilities(release)) is needed


@pytest.mark.ebpf
def test_a_wrong_cgroup_root_is_named(tmp_path: Path) -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    ((name, ok, detail),) = [astuple(r) for r in check.self_test(tmp_path / "none")]
    assert (name, ok) == ("program load", False)
    assert f"{tmp_path / 'none'} cannot be opened" in detail and "PARALLAX_CGROUP_ROOT" in detail
