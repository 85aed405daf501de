"""Recommendations of the feedback loop: the generated, verified policies recorded against the
posture findings they would close, and the rules for going stale (behaviour after COMPLETE),
detecting a widening successor and showing the difference for review. Pure; the loop calls it."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.correlator.domain import Alert, Finding, Workload


class Kind(enum.IntEnum):
    """The kind of policy, numbered as the contract numbers it."""

    SECCOMP = 1
    NETWORK_POLICY = 2
    HARDENING = 3


class State(enum.IntEnum):
    """A recommendation's lifecycle, numbered as the contract numbers it."""

    CURRENT = 1
    STALE = 2
    SUPERSEDED = 3


class Readiness(enum.IntEnum):
    """Policygen's readiness states."""

    UNSPECIFIED = 0
    INSUFFICIENT_EVIDENCE = 1
    UNVERIFIED = 2
    READY = 3
    FAILED = 4


# Controls each kind of policy closes once applied (hardening closes the controls its changes name).
CLOSES = {
    Kind.SECCOMP: ("CTR-10",),
    Kind.NETWORK_POLICY: ("NET-01", "NET-02", "NET-09", "NET-03"),
}


@dataclass(frozen=True)
class Recommendation:
    """A policy with its verification; `policy` and `verification` are opaque serialized
    messages, `text` is the policy as text (for diffs) and `allowed` what it allows."""

    name: str
    workload: Workload
    container: str
    kind: Kind
    state: State
    readiness: Readiness
    text: str
    allowed: tuple[str, ...]
    policy: bytes = b""
    verification: bytes = b""
    state_reason: str = ""
    verification_summary: str = ""
    source_profiles: tuple[str, ...] = ()
    closes_findings: tuple[str, ...] = ()
    closes_control_ids: tuple[str, ...] = ()
    supersedes: str = ""
    superseded_by: str = ""
    review_required: bool = False
    review_diff: str = ""
    create_time: float = 0.0
    update_time: float = 0.0
    verify_time: float = 0.0
    basis: str = field(default="", compare=False)


def closes(kind: Kind, control_ids: Sequence[str], findings: Sequence[Finding]) -> list[Finding]:
    """The workload findings a policy would close: by the kind's controls, or the hardening
    patch's own control list."""
    wanted = set(CLOSES.get(kind, ())) | set(control_ids)
    return [f for f in findings if f.control_id in wanted]


@dataclass(frozen=True)
class Trigger:
    """Behaviour after COMPLETE that makes recommendations of `kinds` stale."""

    kinds: tuple[Kind, ...]
    reason: str


def trigger(alert: Alert) -> Trigger | None:
    """The staleness an "unexpected ..." alert (or a seccomp audit record) implies, or None."""
    rule, fact = alert.rule_id, alert.fact
    if rule == "R0010":
        source = "seccomp audit denial" if fact("source") == "seccomp_audit" else fact("source")
        return Trigger((Kind.SECCOMP,), f"syscall {fact('syscall')} after COMPLETE ({source})")
    if rule == "R0008":
        return Trigger(
            (Kind.NETWORK_POLICY,), f"new outbound peer {fact('remote_address')} after COMPLETE"
        )
    if rule == "R0009":
        return Trigger((Kind.HARDENING,), f"capability {fact('capability')} used after COMPLETE")
    if rule == "R0001":
        return Trigger((Kind.SECCOMP,), f"new executable {fact('path')} after COMPLETE")
    if rule == "R0003":
        return Trigger((Kind.HARDENING,), f"token read by {fact('executable')} after COMPLETE")
    return None


def widened(predecessor: Recommendation, successor_allowed: Sequence[str]) -> list[str]:
    """What the successor allows that the predecessor did not."""
    before = set(predecessor.allowed)
    return sorted(a for a in successor_allowed if a not in before)


def review_diff(predecessor: Recommendation, text: str) -> str:
    """A unified diff from the predecessor's policy text to the successor's."""
    lines = difflib.unified_diff(
        predecessor.text.splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=predecessor.name,
        tofile="successor",
    )
    return "".join(lines)


def affected(
    current: Sequence[Recommendation], alert: Alert, kinds: Sequence[Kind]
) -> list[Recommendation]:
    """The CURRENT recommendations of the alert's workload (and container, for seccomp) that a
    trigger of `kinds` makes stale."""
    return [
        r
        for r in current
        if r.state is State.CURRENT
        and r.workload == alert.workload
        and r.kind in kinds
        and (r.kind is not Kind.SECCOMP or not alert.container or r.container == alert.container)
    ]
