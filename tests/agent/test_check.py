"""`parallax agent check`: the checks that need nothing pass or repair, the header link is made
like scripts/setup.sh does, and on a root machine with BCC the BPF self-test matches /proc."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent import btf, check
from cli.__main__ import app
from tests.agent.conftest import ebpf_unavailable


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
