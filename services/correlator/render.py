"""Rendering of stored recommendations and of workload contexts as protobuf messages, for the
servicer (ListRecommendations, GetWorkloadContext, ListRisks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from parallax.correlator.v1 import context_pb2
from parallax.correlator.v1 import recommendation_pb2 as rpb
from parallax.correlator.v1 import vulnerability_pb2 as vpb
from parallax.posture.v1 import finding_pb2
from parallax.runtime.v1 import profile_pb2

from services.correlator import recommendations as rec
from services.correlator import wire
from services.correlator.correlate import Facts
from services.correlator.feed import with_times
from services.correlator.store import Row


def recommendation(item: rec.Recommendation) -> rpb.Recommendation:
    """A stored recommendation as a message, policy and verification decoded."""
    message = rpb.Recommendation(
        name=item.name,
        workload=wire.ref(item.workload, item.container),
        kind=cast(Any, int(item.kind)),
        state=cast(Any, int(item.state)),
        state_reason=item.state_reason,
        readiness_state=cast(Any, int(item.readiness)),
        verification_summary=item.verification_summary,
        source_profiles=list(item.source_profiles),
        closes_findings=list(item.closes_findings),
        closes_control_ids=list(item.closes_control_ids),
        supersedes=item.supersedes,
        superseded_by=item.superseded_by,
        review_required=item.review_required,
        review_diff=item.review_diff,
        create_time=wire.stamp(item.create_time),
        update_time=wire.stamp(item.update_time),
        verify_time=wire.stamp(item.verify_time),
    )
    if item.kind is rec.Kind.SECCOMP:
        message.seccomp_profile.ParseFromString(item.policy)
        if item.verification:
            message.seccomp_verification.ParseFromString(item.verification)
    elif item.kind is rec.Kind.NETWORK_POLICY:
        message.network_policy.ParseFromString(item.policy)
        if item.verification:
            message.network_policy_verification.ParseFromString(item.verification)
    else:
        message.hardening_patch.ParseFromString(item.policy)
    return message


def _summary(p: profile_pb2.Profile) -> context_pb2.ProfileSummary:
    return context_pb2.ProfileSummary(
        profile=p.name,
        container_name=p.workload.container,
        image_digest=p.image_digest,
        state=p.state,
        coverage=p.coverage,
        syscall_count=len(p.syscalls),
        executable_count=len(p.executables),
        file_open_count=len(p.file_opens),
        network_peer_count=len(p.network_peers),
        capability_names=[c.capability_name for c in p.capabilities if c.allowed_count],
    )


def context(
    facts: Facts,
    *,
    findings: Sequence[finding_pb2.Finding],
    profiles: Sequence[profile_pb2.Profile],
    recommendations: Sequence[rec.Recommendation],
    incidents: Sequence[Row],
    vulnerabilities: Sequence[Row],
    rank: int,
    now: float,
) -> context_pb2.WorkloadContext:
    """The one-screen view of a workload."""
    by_name = {m.name: m for m in findings}
    used = [r for r in vulnerabilities if r.flag == 1]
    return context_pb2.WorkloadContext(
        workload=wire.ref(facts.workload),
        risk=wire.risk(facts.risk, rank, now),
        exposure=wire.exposure(facts.exposure),
        service_account=wire.access(facts.access),
        findings=[wire.finding_context(v, by_name[v.finding.name]) for v in facts.verdicts],
        profiles=[_summary(p) for p in profiles],
        recommendations=[
            recommendation(r)
            for r in recommendations
            if r.state in (rec.State.CURRENT, rec.State.STALE)
        ],
        incidents=[with_times(r.payload, r) for r in incidents[:50]],
        vulnerabilities=[vpb.Vulnerability.FromString(r.payload) for r in used],
        not_in_use_vulnerability_count=sum(1 for r in vulnerabilities if r.flag == 2),
        unknown_vulnerability_count=sum(1 for r in vulnerabilities if r.flag == 3),
    )
