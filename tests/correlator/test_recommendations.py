"""The loop's pure rules: which alerts make which policies stale, widening and review diffs,
and folding post-COMPLETE behaviour into a copy of the frozen profile."""

from __future__ import annotations

from parallax.runtime.v1 import alert_pb2, profile_pb2
from parallax.type.v1 import workload_pb2

from services.correlator import recommendations as rec
from services.correlator.augment import with_alerts
from services.correlator.policies import entrypoint, succeed
from tests.correlator import builders as b


def seccomp(name: str, allowed: tuple[str, ...]) -> rec.Recommendation:
    return rec.Recommendation(
        name=name,
        workload=b.CART,
        container="cart",
        kind=rec.Kind.SECCOMP,
        state=rec.State.CURRENT,
        readiness=rec.Readiness.READY,
        text="\n".join(allowed) + "\n",
        allowed=allowed,
        create_time=b.T0,
    )


def test_unexpected_behaviour_triggers_the_matching_kind() -> None:
    audit = rec.trigger(b.alert("R0010", syscall="ptrace", source="seccomp_audit"))
    assert audit is not None and audit.kinds == (rec.Kind.SECCOMP,)
    assert "seccomp audit denial" in audit.reason
    peer = rec.trigger(b.alert("R0008", remote_address="203.0.113.9:443"))
    assert peer is not None and peer.kinds == (rec.Kind.NETWORK_POLICY,)
    assert rec.trigger(b.alert("R0002")) is None


def test_widening_successor_needs_review_and_keeps_predecessor_stale() -> None:
    old = seccomp("recommendations/old", ("read", "write"))
    old, new = succeed(old, seccomp("recommendations/new", ("ptrace", "read", "write")), "why")
    assert new.review_required and new.supersedes == old.name
    assert "+ptrace" in new.review_diff
    assert old.state is rec.State.CURRENT  # the loop has already marked it STALE
    old2, same = succeed(old, seccomp("recommendations/same", ("read",)), "why")
    assert not same.review_required
    assert old2.state is rec.State.SUPERSEDED and old2.superseded_by == same.name


def test_alert_behaviour_is_folded_into_a_profile_copy() -> None:
    frozen = profile_pb2.Profile(
        workload=workload_pb2.WorkloadRef(container="cart"),
        executables=[profile_pb2.ProfileExecutable(path="/app/server", argv=["/app/server", "-v"])],
    )
    alert = alert_pb2.Alert(
        rule_id="R0010",
        workload=workload_pb2.WorkloadRef(container="cart"),
        evidence={"syscall": "ptrace", "number": "101"},
        state=alert_pb2.ALERT_STATE_OPEN,
    )
    copy = with_alerts(frozen, [alert])
    assert [(s.syscall_name, s.syscall_number) for s in copy.syscalls] == [("ptrace", 101)]
    assert not frozen.syscalls
    assert entrypoint(frozen) == ["/app/server", "-v"]
