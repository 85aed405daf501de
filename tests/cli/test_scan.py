"""`parallax scan` as a user runs it: in-process on corpus files, against a live cluster (the
local Kubernetes REST server) and through a posture service; formats and exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.__main__ import app
from tests.corpus import CORPUS
from tests.kubeapi import KubeAPIServer
from tests.servers import posture_server

BAD_PODS = CORPUS / "badPods"
pytestmark = pytest.mark.skipif(not BAD_PODS.is_dir(), reason=f"corpus not found at {CORPUS}")
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def test_json_report_and_fail_on(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, _ = run(
        "scan", str(BAD_PODS), "--format", "json", "--output", str(out), "--fail-on", "high"
    )
    assert code == 1
    document = json.loads(out.read_text())
    assert any(f["controlId"] == "CTR-01" for f in document["findings"])
    code, _ = run("scan", str(BAD_PODS), "--format", "json", "--output", str(out))
    assert code == 0


def test_json_is_utf8_with_names_as_written(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: café}\n"
        "spec: {containers: [{name: c, image: nginx}]}\n",
        encoding="utf-8",
    )
    code, stdout = run("scan", str(pod), "--format", "json")
    assert code == 0
    document = json.loads(stdout)
    assert document["findings"]
    assert {f["object"]["name"] for f in document["findings"]} == {"café"}


def test_sarif_output(tmp_path: Path) -> None:
    code, stdout = run("scan", str(BAD_PODS), "--format", "sarif")
    assert code == 0
    sarif = json.loads(stdout)
    assert sarif["version"] == "2.1.0"
    result = sarif["runs"][0]["results"][0]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1


def test_input_errors_and_usage_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert run("scan", str(broken))[0] == 2
    assert run("scan", str(tmp_path / "missing"))[0] == 2
    assert run("scan", str(BAD_PODS), "--format", "xml")[0] == 2
    assert run("scan", str(BAD_PODS), "--fail-on", "urgent")[0] == 2
    assert run("scan")[0] == 2


def test_suppression_config_keeps_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "suppress.yaml"
    config.write_text("suppressions:\n- {control: CTR-01, reason: lab cluster only}\n")
    _, stdout = run(
        "scan",
        str(BAD_PODS),
        "--suppressions",
        str(config),
        "--format",
        "json",
        "--fail-on",
        "critical",
    )
    document = json.loads(stdout)
    privileged = [f for f in document["findings"] if f["controlId"] == "CTR-01"]
    assert privileged and all(f["suppression"]["reason"] == "lab cluster only" for f in privileged)


def test_cluster_scan_through_the_kubernetes_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KubeAPIServer() as server:
        server.load_yaml(*sorted(BAD_PODS.rglob("*.yaml")))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": {"server": server.url}}],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "u"}}],
                    "current-context": "local",
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        code, stdout = run("scan", "--cluster", "--format", "json")
    assert code == 0, stdout
    document = json.loads(stdout)
    privileged = [f for f in document["findings"] if f["controlId"] == "CTR-01"]
    assert privileged
    assert all(f["source"]["uri"].startswith("cluster://") for f in privileged)


@pytest.fixture
def posture(tmp_path: Path) -> Iterator[str]:
    with posture_server(tmp_path) as running:
        yield running.address


def test_remote_scan_matches_in_process(posture: str) -> None:
    local = json.loads(run("scan", str(BAD_PODS), "--format", "json")[1])
    code, stdout = run(
        "scan", str(BAD_PODS), "--format", "json", "--posture", posture, "--insecure"
    )
    assert code == 0
    remote = json.loads(stdout)

    def keys(document: dict) -> set[tuple[str, str, str]]:  # type: ignore[type-arg]
        return {(f["controlId"], f["object"]["name"], f["fieldPath"]) for f in document["findings"]}

    assert keys(remote) == keys(local)


def test_progress_bar_only_at_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    out = tmp_path / "report.json"
    argv = [
        sys.executable,
        "-m",
        "cli",
        "scan",
        str(BAD_PODS),
        "--format",
        "json",
        "--output",
        str(out),
    ]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=follower, stdin=subprocess.DEVNULL
    ) as child:
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert child.wait(timeout=60) == 0
    os.close(leader)
    assert b"reading manifests" in shown or b"evaluating" in shown
    assert json.loads(out.read_text())["findings"]
    piped = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert b"reading manifests" not in piped.stderr and b"evaluating" not in piped.stderr


def test_json_scan_loads_no_rich() -> None:
    """rich is for the table and the terminal's progress line; a CI scan should not pay for it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from cli.__main__ import main\n"
        f"try:\n    main(['scan', {str(BAD_PODS)!r}, '--format', 'json'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
