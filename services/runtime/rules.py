"""Detection rules as data with stable IDs (R0001...; never reused), each with its severity and
MITRE ATT&CK technique, and the pure checks that turn one event, the container's profile and its
short-term state into detections. The engine aggregates detections into alerts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from services.runtime import domain
from services.runtime.containers import ContainerState
from services.runtime.learning import Profile
from services.runtime.profiles import Category, State
from services.runtime.signatures import (
    METADATA_ADDRESSES,
    METADATA_NAMES,
    MINING_PORTS,
    TOKEN_DIRS,
    is_mining_pool,
    is_package_manager,
)

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
        "A shell not learned in the profile: kubectl exec, or code execution through the app.",
    ),
    (
        "R0003",
        "Service-account token read by an unexpected process",
        Severity.HIGH,
        "T1528",
        "Credential Access",
        True,
        "A process other than the learned readers opened the token: credential theft.",
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
        "A connection to or lookup of the cloud metadata service: node credential theft.",
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
        "A syscall outside the learned set (monitor mode or seccomp audit): exploitation.",
    ),
    (
        "R0011",
        "Package manager run in a container",
        Severity.LOW,
        "T1072",
        "Execution",
        False,
        "A package manager ran inside a running container: drift from the image, tool install.",
    ),
)
RULES = tuple(
    Rule(rule_id, title, description, severity, technique, tactic, complete)
    for rule_id, title, severity, technique, tactic, complete, description in _TABLE
)
BY_ID = {rule.rule_id: rule for rule in RULES}

Check = Callable[[domain.Event, Profile, ContainerState], list[Detection]]


def _hit(rule_id: str, key: str, message: str, **evidence: str) -> Detection:
    return Detection(BY_ID[rule_id], key, message, evidence)


def _where(event: domain.Event) -> str:
    origin = event.origin
    return f"{origin.workload.namespace}/{origin.workload.name} ({origin.container})"


def _complete(profile: Profile) -> bool:
    return profile.state is State.COMPLETE


def check_exec(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0001, R0002, R0004, R0007, R0011 on a successful exec."""
    exe = event.payload
    assert isinstance(exe, domain.Exec)
    if exe.return_value:
        return []
    found: list[Detection] = []
    parent = box.parent_exe(event) or event.comm
    args = " ".join(exe.argv)[:256]
    learned = any(k[0] == exe.path for k in profile.items[Category.EXEC])
    where = _where(event)
    if _complete(profile) and not learned:
        found.append(
            _hit(
                "R0001",
                exe.path,
                f"unexpected {exe.path} in {where}",
                path=exe.path,
                argv=args,
                parent=parent,
            )
        )
    if domain.is_shell(exe.path):
        if exe.stdin_socket or exe.stdout_socket:
            found.append(
                _hit(
                    "R0007",
                    exe.path,
                    f"{exe.path} with socket stdio in {where}",
                    path=exe.path,
                    argv=args,
                    stdin_socket=str(exe.stdin_socket),
                    stdout_socket=str(exe.stdout_socket),
                )
            )
        if not learned:
            found.append(
                _hit(
                    "R0002",
                    f"{exe.path}<{parent}",
                    f"{exe.path} spawned by {parent} in {where}",
                    path=exe.path,
                    argv=args,
                    parent=parent,
                    tty=str(exe.stdin_tty),
                )
            )
    if exe.path in box.written:
        found.append(
            _hit(
                "R0004",
                exe.path,
                f"{exe.path} was written then executed in {where}",
                path=exe.path,
                argv=args,
            )
        )
    if is_package_manager(exe.path, exe.argv):
        found.append(
            _hit(
                "R0011",
                exe.path,
                f"package manager {exe.path} ran in {where}",
                path=exe.path,
                argv=args,
            )
        )
    return found


def check_open(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0003 on a successful open of the service-account token."""
    opened = event.payload
    assert isinstance(opened, domain.FileOpen)
    path = opened.path
    if opened.return_value < 0 or not path.startswith(TOKEN_DIRS) or not _complete(profile):
        return []
    exe = box.exe(event)
    readers: set[str] = set()
    for key, item in profile.items[Category.FILE].items():
        if str(key[0]).startswith(TOKEN_DIRS):
            readers |= item.tags
    if exe in readers:
        return []
    return [
        _hit(
            "R0003",
            exe,
            f"{exe} read the service-account token in {_where(event)}",
            path=path,
            executable=exe,
        )
    ]


def check_flow(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0005, R0006 and R0008 on a network flow."""
    flow = event.payload
    assert isinstance(flow, domain.Flow)
    remote = f"{flow.remote_address}:{flow.remote_port}"
    where = _where(event)
    found: list[Detection] = []
    if flow.remote_address in METADATA_ADDRESSES:
        found.append(
            _hit(
                "R0005",
                flow.remote_address,
                f"{where} contacted the cloud metadata service at {remote}",
                remote_address=remote,
            )
        )
    if flow.direction != 2 and flow.remote_port in MINING_PORTS:
        found.append(
            _hit(
                "R0006", remote, f"{where} connected to mining port {remote}", remote_address=remote
            )
        )
    if flow.direction != 2 and _complete(profile):
        key = (flow.direction, flow.protocol, flow.remote_address, flow.remote_port)
        names = box.dns.get(flow.remote_address, ())
        known = any((n,) in profile.items[Category.DNS] for n in names)
        if key not in profile.items[Category.PEER] and not known:
            found.append(
                _hit(
                    "R0008",
                    remote,
                    f"{where} connected to unexpected peer {remote}",
                    remote_address=remote,
                    dns_names=",".join(names),
                )
            )
    return found


def check_dns(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0005 and R0006 on a DNS lookup."""
    query = event.payload
    assert isinstance(query, domain.Dns)
    where = _where(event)
    if query.name in METADATA_NAMES:
        return [_hit("R0005", query.name, f"{where} resolved {query.name}", dns_name=query.name)]
    if is_mining_pool(query.name):
        return [
            _hit(
                "R0006",
                query.name,
                f"{where} resolved mining pool {query.name}",
                dns_name=query.name,
            )
        ]
    return []


def check_capability(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0009 on a capability check."""
    cap = event.payload
    assert isinstance(cap, domain.Capability)
    if not _complete(profile) or (cap.number,) in profile.items[Category.CAPABILITY]:
        return []
    return [
        _hit(
            "R0009",
            cap.name,
            f"{box.exe(event)} used {cap.name} in {_where(event)}",
            capability=cap.name,
            allowed=str(cap.allowed),
        )
    ]


def check_syscalls(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0010 on deviations, seccomp audit records and syscall sets after COMPLETE."""
    payload = event.payload
    if not _complete(profile):
        return []
    if isinstance(payload, domain.Deviation):
        pairs = [(payload.arch, payload.number, payload.name, payload.source)]
    else:
        assert isinstance(payload, domain.SyscallSet)
        pairs = [
            (payload.arch, n, name, "syscall_set")
            for n, name in zip(payload.numbers, payload.names, strict=True)
        ]
    known = profile.items[Category.SYSCALL]
    return [
        _hit(
            "R0010",
            f"{arch}:{number}",
            f"syscall {name or number} outside the learned set in {_where(event)}",
            syscall=name or str(number),
            number=str(number),
            source=source,
        )
        for arch, number, name, source in pairs
        if (arch, number) not in known
    ]


CHECKS: dict[type, Check] = {
    domain.Exec: check_exec,
    domain.FileOpen: check_open,
    domain.Flow: check_flow,
    domain.Dns: check_dns,
    domain.Capability: check_capability,
    domain.Deviation: check_syscalls,
    domain.SyscallSet: check_syscalls,
}


def evaluate(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """Return the detections of `event` against the container's profile and state."""
    check = CHECKS.get(type(event.payload))
    return check(event, profile, box) if check else []
