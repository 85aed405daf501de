"""The runtime evidence policygen generates from, as plain frozen dataclasses (wire.py fills them
from runtime Profile messages), and the readiness rule every generated policy follows: only a
verified policy from a COMPLETE profile is READY."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class ProfileState(enum.Enum):
    """Learning state of a runtime profile, least complete first."""

    UNSPECIFIED = 0
    LEARNING = 1
    PARTIAL = 2
    COMPLETE = 3


class Readiness(enum.Enum):
    """Whether a generated policy may be applied."""

    INSUFFICIENT_EVIDENCE = 1
    UNVERIFIED = 2
    READY = 3
    FAILED = 4


@dataclass(frozen=True)
class WorkloadId:
    """A workload, optionally narrowed to one container."""

    namespace: str
    kind: str
    name: str
    container: str = ""
    cluster: str = ""


@dataclass(frozen=True)
class Syscall:
    """One syscall a profile saw, by libseccomp name."""

    name: str
    number: int = 0
    arch: str = ""
    runtime_startup: bool = False


@dataclass(frozen=True)
class FileOpen:
    """One opened path pattern; `writes` when any open asked for write access."""

    path: str
    writes: bool = False
    executables: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPeer:
    """One flow: `direction` is connect, accept or udp_send; `port` is the peer's port for
    outbound flows and the container's own for inbound ones."""

    direction: str
    protocol: str
    address: str
    port: int
    dns_names: tuple[str, ...] = ()
    peer: WorkloadId | None = None


@dataclass(frozen=True)
class Capability:
    """One capability the kernel checked."""

    name: str
    allowed: int = 0
    denied: int = 0
    runtime_startup: bool = False  # only checked by the container runtime's set-up


@dataclass(frozen=True)
class UserId:
    """One (uid, euid) pair and the executables that ran with it."""

    uid: int
    euid: int
    executables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """The learned behaviour of one container of a workload (the union over its replicas)."""

    workload: WorkloadId
    state: ProfileState
    name: str = ""
    state_reason: str = ""
    image_digest: str = ""
    arch: str = ""
    replicas: int = 0
    observed_seconds: float = 0.0
    syscalls: tuple[Syscall, ...] = ()
    executables: tuple[str, ...] = ()
    file_opens: tuple[FileOpen, ...] = ()
    network_peers: tuple[NetworkPeer, ...] = ()
    dns_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    capabilities: tuple[Capability, ...] = ()
    user_ids: tuple[UserId, ...] = ()


def least_complete(states: Iterable[ProfileState]) -> ProfileState:
    """Return the least complete of `states` (UNSPECIFIED when there are none)."""
    return min(states, key=lambda s: s.value, default=ProfileState.UNSPECIFIED)


def evidence_summary(profiles: Iterable[Profile]) -> str:
    """Describe the evidence behind a policy, for example "3 replicas over 24h (COMPLETE)"."""
    chosen = list(profiles)
    replicas = max((p.replicas for p in chosen), default=0)
    hours = max((p.observed_seconds for p in chosen), default=0.0) / 3600
    state = least_complete(p.state for p in chosen).name
    span = f"{hours:.0f}h" if hours >= 1 else f"{hours * 60:.0f}min"
    return f"{replicas} replica{'s' if replicas != 1 else ''} over {span} (profile {state})"


def readiness(profiles: Iterable[Profile], verified: bool | None = None) -> tuple[Readiness, str]:
    """Apply the readiness rule: LEARNING or PARTIAL evidence is only for review; a policy from
    COMPLETE evidence is UNVERIFIED until verification passes (READY) or fails (FAILED)."""
    chosen = list(profiles)
    state = least_complete(p.state for p in chosen)
    if state is not ProfileState.COMPLETE:
        reasons = "; ".join(p.state_reason for p in chosen if p.state_reason)
        why = f": {reasons}" if reasons else ""
        return (
            Readiness.INSUFFICIENT_EVIDENCE,
            f"source profile is {state.name}{why}; the policy may miss behaviour, review only",
        )
    if verified is None:
        return Readiness.UNVERIFIED, "generated from a COMPLETE profile; not verified yet"
    if verified:
        return Readiness.READY, "generated from a COMPLETE profile and verification passed"
    return Readiness.FAILED, "verification failed; see the verification result"
