"""The unified report's content as plain data: findings with runtime verdicts, profiles,
policies with their verification, alerts, incidents, risks, vulnerabilities and flows. Built by
cli/report.py (from the services) and cli/demo.py; rendered by cli/report.py (terminal) and
cli/report_html.py (HTML); saved as JSON so a report outlives the services."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

SEVERITIES = ("UNSPECIFIED", "LOW", "MEDIUM", "HIGH", "CRITICAL")
AWAITING = "awaiting the correlator"


@dataclass
class Finding:
    """A posture finding and what runtime says about it."""

    control_id: str
    severity: str
    workload: str
    message: str
    field_path: str = ""
    verdict: str = ""  # EXERCISED, NOT_EXERCISED, NO_EVIDENCE, UNSPECIFIED, or "" unknown
    verdict_reason: str = ""
    evidence: list[str] = field(default_factory=list)


@dataclass
class Profile:
    """One container's behaviour profile, summarised."""

    workload: str
    container: str
    state: str
    reason: str
    syscalls: int
    executables: list[str] = field(default_factory=list)
    file_opens: int = 0
    writes: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)


@dataclass
class Policy:
    """A generated policy and the proof that it fits."""

    workload: str
    kind: str  # seccomp, networkpolicy, hardening
    readiness: str
    verified: bool | None  # None: not verified
    verification: str
    details: list[str] = field(default_factory=list)
    content: str = ""


@dataclass
class Alert:
    """A runtime alert with its process tree."""

    rule_id: str
    severity: str
    workload: str
    title: str
    message: str
    count: int = 1
    process_tree: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass
class Incident:
    """An alert in its posture context."""

    title: str
    severity: str
    workload: str
    rule_id: str
    message: str
    escalation_reasons: list[str] = field(default_factory=list)
    attack_path: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    exposure: list[str] = field(default_factory=list)
    service_account: str = ""
    contained: str = ""


@dataclass
class Term:
    """One term of a risk score."""

    term: str
    weight: float
    value: float
    contribution: float
    explanation: str


@dataclass
class Risk:
    """A workload's risk score, term by term."""

    workload: str
    score: float
    rank: int
    severity: str
    terms: list[Term] = field(default_factory=list)


@dataclass
class Vulnerability:
    """A vulnerability of a workload's image and whether it is in use."""

    vulnerability_id: str
    severity: str
    workload: str
    package: str
    verdict: str
    reason: str = ""


@dataclass
class Flow:
    """One observed flow and whether the generated NetworkPolicies allow it."""

    source: str
    destination: str
    port: int
    protocol: str = "TCP"
    allowed: bool | None = None
    reason: str = ""


@dataclass
class Report:
    """Everything the report shows; `pending` names the sections a service could not give."""

    title: str
    generated: str
    story: list[str] = field(default_factory=list)
    risks: list[Risk] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    vulnerabilities: list[Vulnerability] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the report as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Report:
        """Read a report written by `save`."""
        return _build(cls, json.loads(path.read_text()))


T = TypeVar("T")
_NESTED: dict[str, type] = {
    "risks": Risk,
    "findings": Finding,
    "profiles": Profile,
    "policies": Policy,
    "alerts": Alert,
    "incidents": Incident,
    "vulnerabilities": Vulnerability,
    "flows": Flow,
}


def _build(kind: type[T], data: dict[str, Any]) -> T:
    values: dict[str, Any] = {}
    for f in fields(kind):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = data[f.name]
    if kind is Report:
        for name, nested in _NESTED.items():
            values[name] = [_build(nested, v) for v in values.get(name, [])]
    if kind is Risk:
        values["terms"] = [_build(Term, v) for v in values.get("terms", [])]
    return kind(**values)
