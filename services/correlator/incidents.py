"""Contextual incidents: a runtime alert joined with the workload's posture, exposure and
service-account power. A foothold (shell, reverse shell, dropped payload) in a privileged
container, one mounting the runtime socket or one holding a cluster-admin token becomes
CRITICAL with the attack path spelled out; an alert on behaviour an enforced setting already
refuses is marked contained. Pure; called by the correlation pass and WatchIncidents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.correlator.context import Access, Exposure
from services.correlator.domain import Alert, Finding, Mount, Severity

FOOTHOLD_RULES = frozenset({"R0002", "R0004", "R0007"})
# Syscalls the container runtime's default seccomp profile refuses to unprivileged containers.
RUNTIME_DEFAULT_BLOCKED = frozenset({
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load",
    "keyctl", "lookup_dcookie", "mount", "move_pages", "name_to_handle_at", "open_by_handle_at",
    "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "quotactl", "reboot", "request_key", "setns", "settimeofday", "swapoff", "swapon", "umount",
    "umount2", "unshare", "uselib", "userfaultfd", "vm86", "vm86old",
})  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One step of an attack path."""

    description: str
    mitre: str = ""
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Incident:
    """An alert with its posture context."""

    name: str
    alert: Alert
    severity: Severity
    title: str
    reasons: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    findings: tuple[Finding, ...] = ()
    contained: bool = False
    containment: str = ""


def incident_name(alert: Alert) -> str:
    """One incident per alert: "incidents/{alert id}"."""
    return "incidents/" + alert.name.rsplit("/", 1)[-1]


def _of(findings: Sequence[Finding], *controls: str) -> list[Finding]:
    return [f for f in findings if f.control_id in controls]


def _paths(
    alert: Alert, findings: Sequence[Finding], mounts: Sequence[Mount], access: Access
) -> list[tuple[str, Step]]:
    """(escalation reason, step) pairs for a foothold in this container."""
    found: list[tuple[str, Step]] = []
    privileged = _of(findings, "CTR-01")
    if privileged:
        found.append(
            (
                "the container is privileged",
                Step(
                    "the privileged container can mount the node's disks or load kernel modules "
                    "and take over the node",
                    "T1611",
                    tuple(f.name for f in privileged),
                ),
            )
        )
    socket = _of(findings, "POD-07")
    if socket:
        where = next((m.path for m in mounts if m.host_path and "sock" in m.host_path), "")
        found.append(
            (
                "the container mounts the container runtime socket",
                Step(
                    f"the runtime socket{' at ' + where if where else ''} lets it start a "
                    "privileged container on the node",
                    "T1610",
                    tuple(f.name for f in socket),
                ),
            )
        )
    if access.cluster_admin:
        admin = _of(findings, "SA-04")
        found.append(
            (
                "the container holds a cluster-admin token",
                Step(
                    f"the shell can read the cluster-admin token mounted at {access.token_path} "
                    "and call the API server with it",
                    "T1528",
                    tuple(f.name for f in admin),
                ),
            )
        )
        found.append(
            (
                "",
                Step(
                    "with cluster-admin it can read every Secret and run pods on every node",
                    "T1078",
                ),
            )
        )
    return found


def _raises(
    alert: Alert, findings: Sequence[Finding], exposure: Exposure, access: Access
) -> list[tuple[str, Step]]:
    """Lesser escalations to HIGH: writable hostPath, powerful token, exposure."""
    found: list[tuple[str, Step]] = []
    writable = _of(findings, "POD-06")
    if writable:
        found.append(
            (
                "the container mounts a writable hostPath",
                Step(
                    "it can rewrite node files through the writable hostPath",
                    "T1611",
                    tuple(f.name for f in writable),
                ),
            )
        )
    if access.power >= Severity.HIGH and not access.cluster_admin and access.token_mounted:
        found.append(
            (
                f"the mounted token has {access.power.name} API power",
                Step(
                    f"the token of {access.service_account or 'its service account'} can create "
                    "pods or read Secrets",
                    "T1528",
                    tuple(f.name for f in _of(findings, "SA-05")),
                ),
            )
        )
    if exposure.exposed:
        found.append(
            (
                "the workload is reachable from outside the cluster",
                Step(f"initial access from outside: {exposure.reasons[0]}", "T1190"),
            )
        )
    return found


def containment(alert: Alert, findings: Sequence[Finding], scanned: bool) -> str:
    """The enforced setting that already refuses the alert's behaviour, or ""."""
    if alert.rule_id == "R0009" and alert.fact("allowed").lower() == "false":
        return f"the kernel denied {alert.fact('capability')}: the container does not hold it"
    if not scanned or _of(findings, "CTR-01"):
        return ""
    syscall = alert.fact("syscall")
    if (
        alert.rule_id == "R0010"
        and syscall in RUNTIME_DEFAULT_BLOCKED
        and not _of(findings, "CTR-10")
    ):
        return f"the enforced seccomp profile (RuntimeDefault or stricter) refuses {syscall}"
    if alert.rule_id == "R0011" and not _of(findings, "CTR-03"):
        return "readOnlyRootFilesystem is enforced: the package manager cannot install"
    return ""


def build(
    alert: Alert,
    *,
    findings: Sequence[Finding],
    mounts: Sequence[Mount],
    exposure: Exposure,
    access: Access,
    scanned: bool,
) -> Incident:
    """Join one alert with its workload's context."""
    mine = [m for m in mounts if m.container == alert.container]
    escalations = _paths(alert, findings, mine, access) if alert.rule_id in FOOTHOLD_RULES else []
    lesser = _raises(alert, findings, exposure, access)
    severity = alert.severity
    if escalations:
        severity = Severity.CRITICAL
    elif alert.rule_id in FOOTHOLD_RULES and lesser:
        severity = max(severity, Severity.HIGH)
    pairs = [p for p in lesser if p[1].mitre == "T1190"] + escalations
    pairs += [p for p in lesser if p[1].mitre != "T1190"]
    start = Step(alert.message, alert.mitre)
    reasons = tuple(r for r, _ in pairs if r) if severity != alert.severity else ()
    relevant = {n for _, s in pairs for n in s.findings}
    contained_by = containment(alert, findings, scanned)
    return Incident(
        name=incident_name(alert),
        alert=alert,
        severity=severity,
        title=_title(alert, findings, access),
        reasons=reasons,
        steps=(start, *(s for _, s in pairs)),
        findings=tuple(f for f in findings if f.name in relevant),
        contained=bool(contained_by),
        containment=contained_by,
    )


def _title(alert: Alert, findings: Sequence[Finding], access: Access) -> str:
    where = f"{alert.workload.namespace}/{alert.workload.name}"
    if alert.rule_id in FOOTHOLD_RULES:
        qualifier = (
            "privileged "
            if _of(findings, "CTR-01")
            else "runtime-socket "
            if _of(findings, "POD-07")
            else "cluster-admin "
            if access.cluster_admin
            else ""
        )
        return f"{alert.title} in {qualifier}container {where}"
    return f"{alert.title} in {where}"
