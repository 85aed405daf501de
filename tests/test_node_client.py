"""Other languages: a Node.js client (@grpc/grpc-js + @grpc/proto-loader) loads our .proto
files and calls health and PostureService.ListControls on a real posture server."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicekit import serve
from tests.servers import posture_server

pytestmark = pytest.mark.node
NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture
def posture(tmp_path: Path) -> Iterator[serve.RunningServer]:
    with posture_server(tmp_path) as running:
        yield running


def test_node_client_calls_health_and_list_controls(posture: serve.RunningServer) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(
            "node and tests/node/node_modules are required (scripts/setup.sh installs them)"
        )
    result = subprocess.run(
        [node, str(NODE_DIR / "client.js"), posture.address],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer = json.loads(result.stdout)
    assert answer["health"] == "SERVING"
    assert len(answer["firstPage"]) == 5
    assert answer["firstPage"][0]["id"] == "CTR-01"
    assert answer["firstPage"][0]["severity"].startswith("SEVERITY_")
    assert len(answer["secondPage"]) == 5
    assert not set(answer["secondPage"]) & {c["id"] for c in answer["firstPage"]}
    assert answer["nextPageToken"]
    assert answer["invalid"]["code"] == "INVALID_ARGUMENT"
    assert "page_size" in answer["invalid"]["details"]
