"""JSON and SARIF 2.1.0 rendering of a scan report, and suppression by annotation and config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.posture.domain import InvalidArgument
from services.posture.loader import load_text
from services.posture.report import to_json, to_sarif
from services.posture.rules import CONTROLS, evaluate
from services.posture.suppress import load_suppressions

PRIVILEGED = """\
apiVersion: v1
kind: Pod
metadata:
  name: priv
  namespace: shop
  annotations:
    parallax.dev/suppress: |
      CTR-03,CTR-04: read-only rootfs and root are needed by the vendor image
      not a valid line
spec:
  containers:
  - name: c
    image: nginx:1.25
    securityContext:
      privileged: true
"""


def scan(config: str = "") -> Any:
    manifests, errors = load_text("---\n" + PRIVILEGED, "deploy/priv.yaml")
    assert not errors
    return evaluate(manifests, suppressions=load_suppressions(config))


def test_json_shape() -> None:
    document = to_json(scan())
    json.dumps(document)
    assert document["schemaVersion"] == 1
    summary = document["summary"]
    assert summary["objectsScanned"] == 1 and summary["errors"] == 1
    privileged = next(f for f in document["findings"] if f["controlId"] == "CTR-01")
    assert privileged["source"] == {"uri": "deploy/priv.yaml", "document": 0, "line": 2}
    assert privileged["object"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "shop",
        "name": "priv",
    }
    assert privileged["fieldPath"] == "spec.containers[0].securityContext.privileged"
    assert privileged["severity"] == "HIGH" and privileged["patch"][0]["op"] == "replace"
    assert privileged["suppression"] is None


def test_annotation_suppression_keeps_finding_and_reason() -> None:
    report = scan()
    suppressed = {f.control_id: f.suppression for f in report.findings if f.suppression}
    assert set(suppressed) == {"CTR-03", "CTR-04"}
    assert suppressed["CTR-03"].origin == "annotation"
    assert "vendor image" in suppressed["CTR-03"].reason
    assert "not a valid line" in report.errors[0].message


def test_config_suppression_with_globs() -> None:
    config = "suppressions:\n- control: POD-*\n  namespace: sh*\n  kind: Pod\n  reason: lab only\n"
    report = scan(config)
    naked = next(f for f in report.findings if f.control_id == "POD-09")
    assert naked.suppression is not None and naked.suppression.origin == "config"
    assert naked.suppression.reason == "lab only"
    other = next(f for f in report.findings if f.control_id == "CTR-01")
    assert other.suppression is None


@pytest.mark.parametrize(
    "config",
    [
        "suppressions:\n- control: CTR-01\n",
        "suppressions:\n- reason: x\n",
        "suppressions: {}\n",
        "suppressions:\n- control: CTR-01\n  reason: x\n  colour: red\n",
        "other: 1\n",
        "suppressions: [\n",
    ],
    ids=["no-reason", "no-control", "not-a-list", "unknown-key", "unknown-top", "bad-yaml"],
)
def test_bad_suppression_config(config: str) -> None:
    with pytest.raises(InvalidArgument):
        load_suppressions(config)


def test_sarif_shape() -> None:
    log = to_sarif(scan(), CONTROLS)
    json.dumps(log)
    assert log["version"] == "2.1.0" and "sarif-2.1.0" in log["$schema"]
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert len(rules) == len(CONTROLS)
    for rule in rules:
        float(rule["properties"]["security-severity"])
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
    result = next(r for r in run["results"] if r["ruleId"] == "CTR-01")
    assert rules[result["ruleIndex"]]["id"] == "CTR-01"
    assert result["level"] == "error"
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "deploy/priv.yaml"
    assert physical["region"]["startLine"] == 2
    suppressed = next(r for r in run["results"] if r["ruleId"] == "CTR-03")
    assert suppressed["suppressions"][0]["kind"] == "inSource"
