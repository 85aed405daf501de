"""Runtime verdicts on posture findings: which evidence check answers which control, and the
rule that turns evidence into EXERCISED (seen in any profile), NOT_EXERCISED (every relevant
profile COMPLETE and silent: safe to remove) or NO_EVIDENCE (no profile, LEARNING or PARTIAL,
or a missing static fact). Pure; called by the correlation pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.correlator import evidence as ev
from services.correlator.domain import (
    Evidence,
    Finding,
    FindingVerdict,
    Mount,
    Profile,
    ProfileState,
    Verdict,
)
from services.correlator.mounts import container_of

MAX_EVIDENCE = 16
Closing = Callable[[Finding], str]


@dataclass(frozen=True)
class Rule:
    """How runtime answers one control: the check and what its absence means, in words."""

    check: ev.Check
    absence: str


_TOKEN = Rule(ev.token_read, "no read of the service-account token")
RULES: Mapping[str, Rule] = {
    "CTR-01": Rule(ev.privileged, "no capability beyond the default set used"),
    "CTR-06": Rule(ev.added_capability, "the added capability never used"),
    "CTR-08": Rule(ev.net_raw, "CAP_NET_RAW never used"),
    "CTR-02": Rule(ev.privilege_escalation, "no setuid exec or euid change"),
    "CTR-04": Rule(ev.runs_as_root, "no process ran as uid 0"),
    "CTR-03": Rule(ev.rootfs_writes, "no write to the root filesystem"),
    "POD-05": Rule(ev.volume_access, "no file activity under the hostPath mount"),
    "POD-06": Rule(ev.volume_writes, "no write under the hostPath mount"),
    "POD-07": Rule(ev.runtime_socket, "no use of the runtime socket"),
    "POD-08": Rule(ev.volume_access, "no read of the mounted cloud credentials"),
    "SA-01": _TOKEN,
    "SA-02": _TOKEN,
    "SA-04": _TOKEN,
    "SA-05": _TOKEN,
    "SEC-03": Rule(ev.volume_access, "no read of the mounted Secret"),
    "POD-03": Rule(ev.host_network, "no node-local connection or inbound flow"),
    "POD-01": Rule(ev.host_pid, "no access to host processes"),
    "NET-01": Rule(ev.network_flows, "no network flow: default-deny fits"),
    "NET-02": Rule(ev.network_flows, "no network flow: default-deny fits"),
    "NET-09": Rule(ev.network_flows, "no network flow: default-deny fits"),
}


def relevant_profiles(finding: Finding, profiles: Sequence[Profile]) -> list[Profile]:
    """The profiles of the container a finding names, or of every container for pod findings."""
    container = container_of(finding)
    return [p for p in profiles if not container or p.container == container]


def judge(
    finding: Finding,
    profiles: Sequence[Profile],
    mounts: tuple[Mount, ...],
    closing: Callable[[Finding], str] = lambda finding: "",
) -> FindingVerdict:
    """The verdict on one finding; `closing` names the recommendation that would close it."""
    rule = RULES.get(finding.control_id)
    if rule is None:
        return FindingVerdict(finding, Verdict.UNSPECIFIED, "no runtime evidence for this control")
    chosen = relevant_profiles(finding, profiles)
    if not chosen:
        return _no_profile(finding)
    seen: list[Evidence] = []
    try:
        for profile in chosen:
            seen += rule.check(finding, profile, mounts)
    except ev.Unjudgeable as missing:
        return FindingVerdict(finding, Verdict.NO_EVIDENCE, str(missing))
    if seen:
        more = f" and {len(seen) - 1} more" if len(seen) > 1 else ""
        reason = f"{seen[0].description}{more}"
        return FindingVerdict(
            finding, Verdict.EXERCISED, reason, tuple(seen[:MAX_EVIDENCE]), closing(finding)
        )
    unfinished = [p for p in chosen if p.state is not ProfileState.COMPLETE]
    if unfinished:
        p = unfinished[0]
        why = p.state_reason or "learning has not finished"
        reason = f"profile {p.container} is {p.state.name}: {why}"
        return FindingVerdict(finding, Verdict.NO_EVIDENCE, reason)
    absence = tuple(
        Evidence(f"{rule.absence} (profile COMPLETE)", p.name) for p in chosen[:MAX_EVIDENCE]
    )
    reason = f"{rule.absence} over a COMPLETE profile: safe to remove"
    return FindingVerdict(finding, Verdict.NOT_EXERCISED, reason, absence, closing(finding))


def _no_profile(finding: Finding) -> FindingVerdict:
    container = container_of(finding)
    what = f"container {container!r}" if container else "the workload"
    return FindingVerdict(
        finding, Verdict.NO_EVIDENCE, f"no runtime profile for {what}: not learning"
    )


def judge_all(
    findings: Sequence[Finding],
    profiles: Sequence[Profile],
    mounts: tuple[Mount, ...],
    closing: Callable[[Finding], str] = lambda finding: "",
) -> list[FindingVerdict]:
    """Verdicts for a workload's findings, highest severity first."""
    ordered = sorted(findings, key=lambda f: (-f.severity, f.control_id, f.name))
    return [judge(f, profiles, mounts, closing) for f in ordered]
