"""Asks policygen for a workload's seccomp profiles, NetworkPolicy and hardening patch, verifies
them and records each as a Recommendation against the findings it would close. A successor keeps
its predecessor's name in `supersedes`, carries the diff, and needs review when it widens.
Called by the feedback loop."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from parallax.policygen.v1 import policygen_service_pb2 as pg
from parallax.policygen.v1 import seccomp_pb2
from parallax.runtime.v1 import profile_pb2
from parallax.type.v1 import source_pb2

from services.correlator import recommendations as rec
from services.correlator import wire
from services.correlator.domain import Finding, Workload
from services.correlator.upstream import Upstreams

R = rec.Readiness


def entrypoint(profile: profile_pb2.Profile) -> list[str]:
    """The container's first process as a runnable command (no varying argument), or []."""
    paths = {e.path for e in profile.executables}
    roots = [e for e in profile.executables if not set(e.parent_paths) & paths]
    # Executables folded in from alerts carry no first-seen time: they are never the entrypoint.
    for e in sorted(roots, key=lambda e: (wire.seconds(e.first_seen_time) or math.inf, e.path)):
        if "*" not in e.argv:
            return [e.path, *list(e.argv)[1:]]
    return []


def _name(workload: Workload, kind: rec.Kind, container: str, now: float, text: str) -> str:
    seed = f"{workload.key}/{container}/{kind.name}/{now}/{text}"
    return "recommendations/" + hashlib.sha256(seed.encode()).hexdigest()[:16]


class Policies:
    """Generation and verification through policygen."""

    def __init__(
        self, upstreams: Upstreams, clock: Callable[[], float], run_seconds: float = 5.0
    ) -> None:
        self.upstreams = upstreams
        self.clock = clock
        self.run_seconds = run_seconds

    def _record(
        self,
        workload: Workload,
        kind: rec.Kind,
        container: str,
        text: str,
        *,
        findings: Sequence[Finding],
        controls: Sequence[str],
        **fields: object,
    ) -> rec.Recommendation:
        now = self.clock()
        closed = rec.closes(kind, controls, findings)
        if container:
            closed = [
                f for f in closed if f"'{container}'" in f.message or "container" not in f.message
            ]
        return rec.Recommendation(
            name=_name(workload, kind, container, now, text),
            workload=workload,
            container=container,
            kind=kind,
            state=rec.State.CURRENT,
            text=text,
            closes_findings=tuple(f.name for f in closed),
            closes_control_ids=tuple(sorted({f.control_id for f in closed})),
            create_time=now,
            update_time=now,
            **fields,  # type: ignore[arg-type]
        )

    def seccomp(
        self, workload: Workload, profile: profile_pb2.Profile, findings: Sequence[Finding]
    ) -> rec.Recommendation:
        """A seccomp profile for one container, verified by running its entrypoint for at most
        `run_seconds` (a server runs until then)."""
        made = self.upstreams.seccomp(profile).seccomp_profile
        readiness, summary, verification, when = (
            R(made.readiness_state),
            made.readiness_reason,
            b"",
            0.0,
        )
        command = entrypoint(profile)
        if readiness is R.UNVERIFIED and command:
            request = pg.VerifySeccompProfileRequest(profile_json=made.oci_json, argv=command)
            request.timeout.FromNanoseconds(round(self.run_seconds * 1e9))
            result = self.upstreams.verify_seccomp(request).verification
            readiness, summary = verdict(command, result)
            verification, when = result.SerializeToString(), self.clock()
        elif readiness is R.UNVERIFIED:
            summary = "not verified: no runnable entrypoint in the profile (varying arguments)"
        return self._record(
            workload,
            rec.Kind.SECCOMP,
            profile.workload.container,
            made.oci_json,
            findings=findings,
            controls=(),
            readiness=readiness,
            allowed=tuple(made.syscall_names),
            policy=made.SerializeToString(),
            verification=verification,
            verification_summary=summary,
            verify_time=when,
            source_profiles=(profile.name,),
        )

    def network_policy(
        self,
        workload: Workload,
        profiles: Sequence[profile_pb2.Profile],
        objects: dict[str, bytes],
        findings: Sequence[Finding],
    ) -> rec.Recommendation | None:
        """A NetworkPolicy verified against the flows it was generated from; None without the
        cluster objects it needs."""
        if not objects:
            return None
        manifests = [source_pb2.Manifest(uri=u, content=c) for u, c in sorted(objects.items())]
        request = pg.GenerateNetworkPolicyRequest(
            workload=wire.ref(workload), profiles=list(profiles), objects=manifests
        )
        made = self.upstreams.netpol(request).network_policy
        readiness, summary, verification, when = (
            R(made.readiness_state),
            made.readiness_reason,
            b"",
            0.0,
        )
        if readiness is R.UNVERIFIED:
            check = pg.VerifyNetworkPolicyRequest(
                policies_yaml=made.policy_yaml,
                flows=list(made.flows),
                workload=wire.ref(workload),
                objects=manifests,
            )
            result = self.upstreams.verify_netpol(check).verification
            readiness = R.READY if result.passed else R.FAILED
            allowed = sum(1 for v in result.flow_verdicts if v.allowed)
            summary = f"{allowed} of {len(result.flow_verdicts)} observed flows allowed"
            verification, when = result.SerializeToString(), self.clock()
        flows = tuple(
            sorted(
                f"{f.source.address}->{f.destination.address}:{f.port}/{f.protocol}"
                for f in made.flows
            )
        )
        return self._record(
            workload,
            rec.Kind.NETWORK_POLICY,
            "",
            made.policy_yaml,
            findings=findings,
            controls=(),
            readiness=readiness,
            allowed=flows,
            policy=made.SerializeToString(),
            verification=verification,
            verification_summary=summary,
            verify_time=when,
            source_profiles=tuple(p.name for p in profiles),
        )

    def hardening(
        self,
        workload: Workload,
        profiles: Sequence[profile_pb2.Profile],
        objects: dict[str, bytes],
        findings: Sequence[Finding],
        seccomp: Sequence[rec.Recommendation],
    ) -> rec.Recommendation:
        """A hardening patch; READY when its evidence is COMPLETE and the seccomp profile it
        points at passed verification under enforcement."""
        localhost = ""
        if len(seccomp) == 1:
            localhost = f"operator/{workload.namespace}-{workload.name}-{seccomp[0].container}.json"
        manifests = [source_pb2.Manifest(uri=u, content=c) for u, c in sorted(objects.items())]
        request = pg.GenerateHardeningRequest(
            workload=wire.ref(workload),
            profiles=list(profiles),
            objects=manifests,
            seccomp_localhost_profile=localhost,
        )
        patch = self.upstreams.hardening(request).hardening_patch
        readiness, summary = _hardening_readiness(R(patch.readiness_state), patch, seccomp)
        controls = sorted({c for change in patch.changes for c in change.control_ids})
        kept = tuple(
            f"{s.container_name}:{s.field_path} left: {s.reason}" for s in patch.skipped_changes
        )
        return self._record(
            workload,
            rec.Kind.HARDENING,
            "",
            patch.patch_yaml,
            findings=findings,
            controls=controls,
            readiness=readiness,
            allowed=kept,
            policy=patch.SerializeToString(),
            verification_summary=summary,
            verify_time=self.clock() if readiness is R.READY else 0.0,
            source_profiles=tuple(p.name for p in profiles),
        )


def ran_until_timeout(result: seccomp_pb2.SeccompVerification) -> bool:
    """A server: the command was still running at the timeout, nothing was denied (the traced
    second run names every denial) and the negative control was refused."""
    return result.timed_out and not result.denied_syscalls and result.negative_control.refused


def verdict(
    command: Sequence[str], result: seccomp_pb2.SeccompVerification
) -> tuple[rec.Readiness, str]:
    """Readiness and summary of a seccomp verification of `command`."""
    ran = " ".join(command)
    refused = f"negative control {result.negative_control.syscall_name} refused"
    if result.passed:
        return R.READY, f"{ran} ran under the profile; {refused}"
    if ran_until_timeout(result):
        took = result.elapsed.ToTimedelta().total_seconds()
        return R.READY, (
            f"{ran} ran under the profile without a denial until the verification timeout "
            f"({took:.1f}s, a server); {refused}"
        )
    return R.FAILED, f"verification failed: {result.failure_reason}"


def _hardening_readiness(
    readiness: rec.Readiness, patch: object, seccomp: Sequence[rec.Recommendation]
) -> tuple[rec.Readiness, str]:
    changes = len(getattr(patch, "changes", ()))
    if readiness is not R.UNVERIFIED:
        return readiness, str(getattr(patch, "readiness_reason", ""))
    failed = [s for s in seccomp if s.readiness is not R.READY]
    if failed:
        return R.FAILED if failed[0].readiness is R.FAILED else R.UNVERIFIED, (
            f"seccomp profile {failed[0].name} is {failed[0].readiness.name}"
        )
    checked = f"; seccomp profile {seccomp[0].name} verified" if seccomp else ""
    return R.READY, f"{changes} changes, each backed by a COMPLETE profile{checked}"


def succeed(
    predecessor: rec.Recommendation, successor: rec.Recommendation, reason: str
) -> tuple[rec.Recommendation, rec.Recommendation]:
    """Link a successor to its predecessor: diff, review when it widens; the predecessor stays
    STALE while its successor awaits review, else becomes SUPERSEDED."""
    wider = rec.widened(predecessor, successor.allowed)
    new = replace(
        successor,
        supersedes=predecessor.name,
        review_required=bool(wider),
        review_diff=rec.review_diff(predecessor, successor.text),
        state_reason=f"replaces {predecessor.name}: {reason}"
        + (f"; widens it by {', '.join(wider[:8])}: review before applying" if wider else ""),
    )
    old = replace(predecessor, update_time=successor.create_time)
    if not wider:
        old = replace(old, state=rec.State.SUPERSEDED, superseded_by=successor.name)
    return old, new
