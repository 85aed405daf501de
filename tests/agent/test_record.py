"""`parallax record -- CMD`: one command recorded from start to exit with no service running."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.agent.conftest import ebpf_unavailable

pytestmark = pytest.mark.ebpf


def test_record_prints_profile() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [
            ".venv/bin/parallax",
            "record",
            "--json",
            "--",
            "sh",
            "-c",
            "cat /etc/hostname /nope >/dev/null 2>&1; exit 2",
        ],
        capture_output=True,
        timeout=90,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2, result.stderr
    profile = json.loads(result.stdout)
    assert profile["exit_code"] == 2
    assert {"execve", "openat", "read", "exit_group"} <= set(profile["syscalls"])
    assert any("cat /etc/hostname /nope" in e for e in profile["execs"])
    assert any(o.startswith("/nope ") for o in profile["failed_opens"])
    assert any(o.startswith("/etc/hostname ") for o in profile["opens"])
    assert profile["drops"] == {}
