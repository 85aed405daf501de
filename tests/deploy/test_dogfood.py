"""Parallax's own posture scan of deploy/ (the raw files, as `parallax scan deploy/` reads them,
and each rendered build) finds nothing HIGH or CRITICAL that is not suppressed, and every
suppression is one of the reviewed few, with its reason."""

from __future__ import annotations

import pytest

from services.posture import loader, rules
from services.posture.domain import ScanReport
from tests.deploy.conftest import BUILDS, DEPLOY
from tests.deploy.kustomize import Obj

BLOCKING = ("HIGH", "CRITICAL")
TLS = {(kind, name, "SEC-03") for kind, name in (
    ("Deployment", "posture"), ("Deployment", "runtime"), ("Deployment", "policygen"),
    ("Deployment", "correlator"), ("DaemonSet", "agent"),
)}  # fmt: skip
# Each accepted exception: the component's own mTLS key pair (SEC-03), the three API readers'
# tokens (SA-02), and the agent's eBPF needs (capabilities, read-only host mounts).
REVIEWED = TLS | {
    ("Deployment", "posture", "SA-02"),
    ("Deployment", "policygen", "SA-02"),
    ("DaemonSet", "agent", "SA-02"),
    ("DaemonSet", "agent", "CTR-06"),
    ("DaemonSet", "agent", "POD-05"),
}


def _blocking(report: ScanReport) -> list[str]:
    return [
        f"{f.control_id} {f.object.kind}/{f.object.name}: {f.message}"
        for f in report.findings
        if f.severity.name in BLOCKING and f.suppression is None
    ]


def test_scan_of_the_deploy_directory_is_clean() -> None:
    manifests, errors = loader.load_paths([str(DEPLOY)])
    assert not errors
    assert manifests
    assert _blocking(rules.evaluate(manifests)) == []


@pytest.mark.parametrize("build", BUILDS)
def test_scan_of_each_build_is_clean(build: str, builds: dict[str, list[Obj]]) -> None:
    manifests, errors = loader.from_objects(builds[build], f"deploy/{build}")
    assert not errors
    report = rules.evaluate(manifests)
    assert not report.errors
    assert _blocking(report) == []


@pytest.mark.parametrize(
    ("build", "reviewed"),
    [
        ("overlays/dev", REVIEWED),
        # Certificates from the csi-driver: the agent mounts no Secret at all.
        ("overlays/dev-csi-agent", REVIEWED - {("DaemonSet", "agent", "SEC-03")}),
    ],
    ids=["dev", "dev-csi-agent"],
)
def test_only_the_reviewed_findings_are_suppressed(
    build: str, reviewed: set[tuple[str, str, str]], builds: dict[str, list[Obj]]
) -> None:
    manifests, _ = loader.from_objects(builds[build], f"deploy/{build}")
    suppressed = [f for f in rules.evaluate(manifests).findings if f.suppression is not None]
    assert {(f.object.kind, f.object.name, f.control_id) for f in suppressed} == reviewed
    for finding in suppressed:
        assert finding.suppression is not None
        assert finding.suppression.origin == "annotation"
        assert len(finding.suppression.reason) > 40, finding.suppression.reason


def test_an_unsuppressed_privilege_would_be_caught(full: list[Obj]) -> None:
    objects = [dict(o) for o in full if o["kind"] == "DaemonSet"]
    agent = objects[0]
    agent["metadata"] = {**agent["metadata"], "annotations": {}}
    manifests, _ = loader.from_objects(objects, "deploy/overlays/dev")
    assert {line.split()[0] for line in _blocking(rules.evaluate(manifests))} >= {
        "CTR-06",
        "POD-05",
    }
