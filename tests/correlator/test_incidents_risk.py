"""Incident escalation and containment, and the risk score's terms."""

from __future__ import annotations

import pytest

from services.correlator.context import Access, Exposure, access, exposure
from services.correlator.domain import FindingVerdict, Severity, Verdict
from services.correlator.incidents import build
from services.correlator.risk import WEIGHTS, score
from tests.correlator import builders as b

NONE = Access()
CLOSED = Exposure(False)
ADMIN = b.finding(
    "SA-04",
    "mounted token of 'cart' is admin-equivalent via ClusterRoleBinding/x -> "
    "ClusterRole/cluster-admin rules[0]",
)


@pytest.mark.parametrize(
    ("findings", "step"),
    [
        ([b.finding("CTR-01", "container 'cart' runs privileged")], "mount the node's disks"),
        ([b.finding("POD-07", "mounts runtime socket /var/run/docker.sock")], "runtime socket"),
        ([ADMIN], "cluster-admin token"),
    ],
    ids=["privileged", "runtime-socket", "cluster-admin"],
)
def test_shell_escalates_to_critical_with_attack_path(findings: list, step: str) -> None:
    shell = b.alert("R0002", path="/bin/sh", parent="/app/server")
    account = access(findings, [], "shop")
    incident = build(
        shell, findings=findings, mounts=(), exposure=CLOSED, access=account, scanned=True
    )
    assert incident.severity is Severity.CRITICAL
    assert incident.reasons
    assert incident.steps[0].description == shell.message
    assert any(step in s.description for s in incident.steps[1:])
    assert {f.name for f in incident.findings} == {f.name for f in findings}


def test_shell_in_plain_container_keeps_its_severity() -> None:
    incident = build(
        b.alert("R0002"), findings=[], mounts=(), exposure=CLOSED, access=NONE, scanned=True
    )
    assert incident.severity is Severity.MEDIUM
    assert incident.reasons == ()
    assert not incident.contained


def test_exposed_shell_becomes_high_and_starts_with_initial_access() -> None:
    seen = Exposure(True, ("reachable from outside the cluster via Service/cart (NodePort)",))
    incident = build(
        b.alert("R0002"), findings=[], mounts=(), exposure=seen, access=NONE, scanned=True
    )
    assert incident.severity is Severity.HIGH
    assert incident.steps[1].mitre == "T1190"


@pytest.mark.parametrize(
    ("alert", "findings", "reason"),
    [
        (b.alert("R0009", capability="CAP_SYS_ADMIN", allowed="False"), [], "kernel denied"),
        (b.alert("R0010", syscall="unshare", number="272", source="monitor"), [], "seccomp"),
        (b.alert("R0011", path="/usr/bin/apt"), [], "readOnlyRootFilesystem"),
    ],
    ids=["capability-denied", "runtime-default-seccomp", "read-only-rootfs"],
)
def test_blocked_behaviour_is_contained(alert, findings, reason) -> None:  # type: ignore[no-untyped-def]
    incident = build(
        alert, findings=findings, mounts=(), exposure=CLOSED, access=NONE, scanned=True
    )
    assert incident.contained
    assert reason in incident.containment


def test_not_contained_when_the_setting_is_missing_or_unknown() -> None:
    unshare = b.alert("R0010", syscall="unshare", number="272", source="monitor")
    no_seccomp = [b.finding("CTR-10", "container 'cart' has no seccomp profile")]
    for findings, scanned in ((no_seccomp, True), ([], False)):
        built = build(
            unshare, findings=findings, mounts=(), exposure=CLOSED, access=NONE, scanned=scanned
        )
        assert not built.contained


def verdict(control: str, severity: Severity, kind: Verdict) -> FindingVerdict:
    return FindingVerdict(b.finding(control, severity=severity), kind, "")


def test_risk_terms_explain_each_contribution() -> None:
    verdicts = [
        verdict("CTR-01", Severity.HIGH, Verdict.EXERCISED),
        verdict("POD-06", Severity.HIGH, Verdict.EXERCISED),
        verdict("CTR-03", Severity.LOW, Verdict.NOT_EXERCISED),
    ]
    seen = exposure([b.finding("NET-04", "reachable via Service/cart (LoadBalancer)")], [])
    account = access(
        [ADMIN, b.finding("SA-01", "ServiceAccount 'cart' token is mounted")],
        [b.profile(file_opens=(b.opened("/var/run/secrets/kubernetes.io/serviceaccount/token"),))],
        "shop",
    )
    risk = score(
        b.CART,
        verdicts=verdicts,
        exposure=seen,
        access=account,
        alerts=[b.alert("R0002")],
        in_use=[Severity.CRITICAL],
    )
    terms = {t.term: t for t in risk.terms}
    assert set(terms) == set(WEIGHTS)
    assert terms["severity"].value == 0.75
    assert terms["runtime_verdicts"].value == 0.75  # two HIGH exercised: 6 points / 8
    assert terms["exposure"].value == 1.0 and "LoadBalancer" in terms["exposure"].explanation
    assert terms["service_account_power"].value == 1.0
    assert "read at runtime" in terms["service_account_power"].explanation
    assert account.cluster_admin and account.service_account == "shop/cart"
    assert terms["open_alerts"].value == 0.5
    assert terms["vulnerabilities_in_use"].value == 1.0
    expected = 25 * 0.75 + 20 * 0.75 + 20 + 15 + 10 * 0.5 + 10
    assert risk.score == pytest.approx(expected)
    assert risk.severity is Severity.HIGH  # 83.75: the 70-89 band
    contributions = [t.contribution for t in risk.terms]
    assert contributions == sorted(contributions, reverse=True)


def test_quiet_workload_scores_low() -> None:
    risk = score(
        b.CART,
        verdicts=[verdict("IMG-01", Severity.LOW, Verdict.UNSPECIFIED)],
        exposure=CLOSED,
        access=NONE,
        alerts=[],
        in_use=[],
    )
    assert risk.score == pytest.approx(25 * 0.25)
    assert risk.severity is Severity.LOW
    assert all(t.explanation for t in risk.terms)
