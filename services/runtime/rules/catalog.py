"""The rule catalog: detection rules as data with stable IDs (R0001...; never reused), each with
its severity, MITRE ATT&CK technique and whether it needs a COMPLETE profile, and the Detection a
check returns. Pure; ListRules renders it and checks.py implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from services.runtime import domain

Severity = domain.Severity


@dataclass(frozen=True)
class Rule:
    """One detection rule."""

    rule_id: str
    title: str
    description: str
    severity: Severity
    technique: str
    tactic: str
    requires_complete: bool = False


class Detection(NamedTuple):
    """One rule match: the rule, what makes repeats the same alert, a sentence and evidence."""

    rule: Rule
    key: str
    message: str
    evidence: dict[str, str]


# rule_id, title, severity, MITRE technique, tactic, requires COMPLETE, description
_TABLE: tuple[tuple[str, str, Severity, str, str, bool, str], ...] = (
    (
        "R0001",
        "Unexpected executable",
        Severity.MEDIUM,
        "T1059",
        "Execution",
        True,
        "An executable the COMPLETE profile never saw: an intruder's tool or a changed image.",
    ),
    (
        "R0002",
        "Shell spawned in a container",
        Severity.MEDIUM,
        "T1059.004",
        "Execution",
        False,
        "A shell with a terminal, one started from outside the container (kubectl exec), or one "
        "spawned by a process the profile never saw spawn it (code execution through the app); "
        "not the container's init process.",
    ),
    (
        "R0003",
        "Service-account token read by an unexpected process",
        Severity.HIGH,
        "T1528",
        "Credential Access",
        True,
        "A process the profile never saw reading that token opened it (the service-account "
        "token or a projected cloud token: IRSA, EKS Pod Identity, workload identity): "
        "credential theft.",
    ),
    (
        "R0004",
        "Drift: executable written then run",
        Severity.HIGH,
        "T1105",
        "Command and Control",
        False,
        "A file written inside the running container was then executed: a dropped payload.",
    ),
    (
        "R0005",
        "Cloud metadata service contacted",
        Severity.HIGH,
        "T1552.005",
        "Credential Access",
        False,
        "A connection to the cloud metadata service's address (IPv4-mapped IPv6 forms too) or "
        "a lookup of its name: node credential theft.",
    ),
    (
        "R0006",
        "Crypto-mining connection",
        Severity.HIGH,
        "T1496",
        "Impact",
        False,
        "A connection to a mining-pool port, or a lookup of a mining-pool name: cryptojacking.",
    ),
    (
        "R0007",
        "Reverse shell",
        Severity.CRITICAL,
        "T1059.004",
        "Execution",
        False,
        "A shell whose stdin or stdout is a socket: an attacker's interactive foothold.",
    ),
    (
        "R0008",
        "Unexpected outbound peer",
        Severity.MEDIUM,
        "T1071",
        "Command and Control",
        True,
        "An outbound peer the COMPLETE profile never saw: exfiltration or command and control.",
    ),
    (
        "R0009",
        "Unexpected capability use",
        Severity.MEDIUM,
        "T1068",
        "Privilege Escalation",
        True,
        "A capability the COMPLETE profile never needed: privilege escalation attempts.",
    ),
    (
        "R0010",
        "Syscall outside the learned set",
        Severity.MEDIUM,
        "T1611",
        "Privilege Escalation",
        True,
        "A syscall outside the learned set (monitor mode or seccomp audit): exploitation."
        " Monitor and audit records count against a PARTIAL profile too (their filter was"
        " built from it); the evidence names the profile's state.",
    ),
    (
        "R0011",
        "Package manager run in a container",
        Severity.LOW,
        "T1072",
        "Execution",
        False,
        "A package manager installed, upgraded or removed packages in a running container (not "
        "as its init process): drift from the image, tool install.",
    ),
)
RULES = tuple(
    Rule(rule_id, title, description, severity, technique, tactic, complete)
    for rule_id, title, severity, technique, tactic, complete, description in _TABLE
)
BY_ID = {rule.rule_id: rule for rule in RULES}
