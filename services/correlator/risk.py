"""The risk score of a workload, 0 to 100, as a sum of documented terms (contribution = weight
x value, value in [0, 1]), each with a one-sentence explanation. Pure; called by ListRisks and
GetWorkloadContext.

| term | weight | value in [0, 1] |
|---|---|---|
| severity | 25 | highest unsuppressed finding: critical 1, high .75, medium .5, low .25 |
| runtime_verdicts | 20 | EXERCISED findings' severity points (low 1 .. critical 4) / 8, max 1 |
| exposure | 20 | 1 when NodePort/LoadBalancer, Ingress or outside inbound flows reach it |
| service_account_power | 15 | mounted token's power: critical 1, high .66, medium .33, low .1 |
| open_alerts | 10 | highest severity among open alerts / 4 |
| vulnerabilities_in_use | 10 | highest severity among IN_USE vulnerabilities / 4 |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.correlator.context import Access, Exposure
from services.correlator.domain import Alert, FindingVerdict, Severity, Verdict, Workload

WEIGHTS = {
    "severity": 25.0,
    "runtime_verdicts": 20.0,
    "exposure": 20.0,
    "service_account_power": 15.0,
    "open_alerts": 10.0,
    "vulnerabilities_in_use": 10.0,
}
_FINDING_VALUE = {Severity.CRITICAL: 1.0, Severity.HIGH: 0.75, Severity.MEDIUM: 0.5}
_POWER_VALUE = {Severity.CRITICAL: 1.0, Severity.HIGH: 0.66, Severity.MEDIUM: 0.33}


@dataclass(frozen=True)
class Term:
    """One term of a score."""

    term: str
    weight: float
    value: float
    explanation: str

    @property
    def contribution(self) -> float:
        """Return weight x value."""
        return round(self.weight * self.value, 2)


@dataclass(frozen=True)
class Risk:
    """A workload's score with its terms, largest contribution first."""

    workload: Workload
    score: float
    terms: tuple[Term, ...]

    @property
    def severity(self) -> Severity:
        """The score's band: 90 critical, 70 high, 40 medium, otherwise low."""
        for threshold, band in (
            (90, Severity.CRITICAL),
            (70, Severity.HIGH),
            (40, Severity.MEDIUM),
        ):
            if self.score >= threshold:
                return band
        return Severity.LOW


def _term(name: str, value: float, explanation: str) -> Term:
    return Term(name, WEIGHTS[name], round(min(max(value, 0.0), 1.0), 4), explanation)


def _severity_term(verdicts: Sequence[FindingVerdict]) -> Term:
    if not verdicts:
        return _term("severity", 0.0, "no unsuppressed posture finding")
    top = max(v.finding.severity for v in verdicts)
    count = sum(1 for v in verdicts if v.finding.severity == top)
    value = _FINDING_VALUE.get(top, 0.25)
    return _term("severity", value, f"{count} {top.name} finding(s) at the highest severity")


def _verdict_term(verdicts: Sequence[FindingVerdict]) -> Term:
    used = [v for v in verdicts if v.verdict is Verdict.EXERCISED]
    if not used:
        return _term("runtime_verdicts", 0.0, "no finding exercised at runtime")
    points = sum(int(v.finding.severity) for v in used)
    names = ", ".join(sorted({v.finding.title or v.finding.control_id for v in used})[:4])
    return _term(
        "runtime_verdicts", points / 8, f"{len(used)} finding(s) exercised at runtime ({names})"
    )


def _exposure_term(exposure: Exposure) -> Term:
    if not exposure.exposed:
        return _term("exposure", 0.0, "no path from outside the cluster")
    return _term("exposure", 1.0, "; ".join(exposure.reasons[:3]))


def _power_term(access: Access) -> Term:
    if not access.token_mounted:
        return _term("service_account_power", 0.0, "no service-account token mounted")
    value = _POWER_VALUE.get(access.power, 0.1)
    read = ", read at runtime" if access.token_read else ""
    who = access.service_account or "the service account"
    text = f"token of {who} mounted{read}; API power {access.power.name}"
    return _term("service_account_power", value, text)


def _alert_term(alerts: Sequence[Alert]) -> Term:
    open_alerts = [a for a in alerts if not a.resolved]
    if not open_alerts:
        return _term("open_alerts", 0.0, "no open alert")
    top = max(a.severity for a in open_alerts)
    return _term("open_alerts", top / 4, f"{len(open_alerts)} open alert(s), highest {top.name}")


def _vuln_term(in_use: Sequence[Severity]) -> Term:
    if not in_use:
        return _term("vulnerabilities_in_use", 0.0, "no vulnerability in use")
    top = max(in_use)
    return _term(
        "vulnerabilities_in_use",
        top / 4,
        f"{len(in_use)} vulnerabilities in use, highest {top.name}",
    )


def score(
    workload: Workload,
    *,
    verdicts: Sequence[FindingVerdict],
    exposure: Exposure,
    access: Access,
    alerts: Sequence[Alert],
    in_use: Sequence[Severity],
) -> Risk:
    """Score a workload from its verdicts, exposure, access, alerts and in-use vulnerabilities."""
    terms = [
        _severity_term(verdicts),
        _verdict_term(verdicts),
        _exposure_term(exposure),
        _power_term(access),
        _alert_term(alerts),
        _vuln_term(in_use),
    ]
    terms.sort(key=lambda t: (-t.contribution, t.term))
    total = round(min(sum(t.contribution for t in terms), 100.0), 2)
    return Risk(workload, total, tuple(terms))
