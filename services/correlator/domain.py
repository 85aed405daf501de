"""The correlator's vocabulary: frozen facts read from posture (findings), runtime (profiles and
alerts) and policygen (recommendations), and the verdicts computed over them. Pure: the wire
module builds these from protos, every other correlator module reads them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """Severity bands shared by findings, alerts, incidents and vulnerabilities."""

    UNSPECIFIED = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class ProfileState(enum.IntEnum):
    """A runtime profile's learning state."""

    UNSPECIFIED = 0
    LEARNING = 1
    COMPLETE = 2
    PARTIAL = 3


class Verdict(enum.IntEnum):
    """What runtime evidence says about a posture finding."""

    UNSPECIFIED = 0
    EXERCISED = 1
    NOT_EXERCISED = 2
    NO_EVIDENCE = 3


@dataclass(frozen=True, order=True)
class Workload:
    """A workload: namespace, controller kind and name."""

    namespace: str
    kind: str
    name: str

    @property
    def key(self) -> str:
        """Return "{namespace}/{kind}/{name}"."""
        return f"{self.namespace}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class Finding:
    """A posture finding, reduced to what correlation needs (its name is the posture name)."""

    name: str
    control_id: str
    title: str
    severity: Severity
    workload: Workload
    field_path: str
    message: str
    uri: str = ""
    document: int = 0
    details: tuple[tuple[str, str], ...] = ()
    fingerprint: str = ""

    def detail(self, key: str) -> str:
        """Return a detail posture attached, or ""."""
        return dict(self.details).get(key, "")


@dataclass(frozen=True)
class Capability:
    """A capability the kernel checked for a container."""

    name: str
    allowed: int
    denied: int
    first_seen: float = 0.0


@dataclass(frozen=True)
class UserId:
    """A (uid, euid) pair seen on a container's processes."""

    uid: int
    euid: int
    executables: tuple[str, ...] = ()
    first_seen: float = 0.0


@dataclass(frozen=True)
class FileOpen:
    """A successfully opened path pattern."""

    pattern: str
    writes: bool
    executables: tuple[str, ...] = ()
    first_seen: float = 0.0


@dataclass(frozen=True)
class Peer:
    """A network peer; inbound is True for accepted flows."""

    address: str
    port: int
    inbound: bool
    dns_names: tuple[str, ...] = ()
    first_seen: float = 0.0


@dataclass(frozen=True)
class Executable:
    """An executable run in the container."""

    path: str
    argv: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    first_seen: float = 0.0


@dataclass(frozen=True)
class Profile:
    """One container's current runtime profile."""

    name: str
    workload: Workload
    container: str
    image: str
    digest: str
    state: ProfileState
    state_reason: str = ""
    capabilities: tuple[Capability, ...] = ()
    user_ids: tuple[UserId, ...] = ()
    file_opens: tuple[FileOpen, ...] = ()
    peers: tuple[Peer, ...] = ()
    executables: tuple[Executable, ...] = ()
    syscalls: tuple[str, ...] = ()
    complete_time: float = 0.0


@dataclass(frozen=True)
class Alert:
    """A runtime alert on one container."""

    name: str
    rule_id: str
    title: str
    severity: Severity
    message: str
    workload: Workload
    container: str
    evidence: tuple[tuple[str, str], ...] = ()
    process_paths: tuple[str, ...] = ()
    resolved: bool = False
    mitre: str = ""
    last_seen: float = 0.0

    def fact(self, key: str) -> str:
        """Return an evidence value of the alert, or ""."""
        return dict(self.evidence).get(key, "")


@dataclass(frozen=True)
class Evidence:
    """One observed fact behind a verdict; observed is 0 for absence-of-behaviour evidence."""

    description: str
    source: str
    observed: float = 0.0


@dataclass(frozen=True)
class FindingVerdict:
    """A finding with its runtime verdict, evidence and the recommendation that closes it."""

    finding: Finding
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = ()
    recommendation: str = ""


@dataclass(frozen=True)
class Mount:
    """A volume mounted into a container: its volume (and index in the pod spec's volumes),
    source kind ("hostPath", "secret", "emptyDir", ...), mount path and writability."""

    container: str
    volume: str
    source: str
    path: str
    read_only: bool
    host_path: str = ""
    index: int = -1


@dataclass(frozen=True)
class WorkloadFacts:
    """Everything known about one workload, the input of verdicts, risk and incidents."""

    workload: Workload
    findings: tuple[Finding, ...] = ()
    profiles: tuple[Profile, ...] = ()
    mounts: tuple[Mount, ...] = ()
    alerts: tuple[Alert, ...] = field(default=())
