"""Translation between policygen's domain and its protobuf messages: runtime Profiles in,
generated policies, verifications and patches out. The servicer and the CLI use it."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from parallax.policygen.v1 import network_policy_pb2 as np_pb
from parallax.policygen.v1 import readiness_pb2, seccomp_pb2
from parallax.runtime.v1 import event_pb2, profile_pb2
from parallax.type.v1 import platform_pb2, severity_pb2, workload_pb2

from services.policygen import domain
from services.policygen.domain import WorkloadId
from services.policygen.seccomp import GeneratedSeccomp
from services.policygen.verify_seccomp import Verification, tail

_DIRECTIONS = {
    event_pb2.FLOW_DIRECTION_CONNECT: "connect",
    event_pb2.FLOW_DIRECTION_ACCEPT: "accept",
    event_pb2.FLOW_DIRECTION_UDP_SEND: "udp_send",
}
_STATES = {
    profile_pb2.PROFILE_STATE_LEARNING: domain.ProfileState.LEARNING,
    profile_pb2.PROFILE_STATE_PARTIAL: domain.ProfileState.PARTIAL,
    profile_pb2.PROFILE_STATE_COMPLETE: domain.ProfileState.COMPLETE,
}
STATES_TO_WIRE = {state: wire for wire, state in _STATES.items()}


def arch_to_wire(arch: str) -> platform_pb2.Architecture.ValueType:
    """Map "SCMP_ARCH_X86_64" to ARCHITECTURE_X86_64."""
    return platform_pb2.Architecture.Value(arch.replace("SCMP_ARCH_", "ARCHITECTURE_"))


def arch_from_wire(value: int) -> str:
    """Map ARCHITECTURE_X86_64 to "SCMP_ARCH_X86_64"; "" for UNSPECIFIED."""
    if not value:
        return ""
    return platform_pb2.Architecture.Name(value).replace("ARCHITECTURE_", "SCMP_ARCH_")  # type: ignore[arg-type]


def protocol_from_wire(value: int) -> str:
    """Map PROTOCOL_TCP to "TCP" (UNSPECIFIED reads as TCP, the Kubernetes default)."""
    return platform_pb2.Protocol.Name(value).removeprefix("PROTOCOL_") if value else "TCP"  # type: ignore[arg-type]


def protocol_to_wire(protocol: str) -> platform_pb2.Protocol.ValueType:
    """Map "TCP" to PROTOCOL_TCP."""
    return platform_pb2.Protocol.Value(f"PROTOCOL_{protocol}")


def workload_from_wire(ref: workload_pb2.WorkloadRef) -> WorkloadId:
    """Map a WorkloadRef."""
    return WorkloadId(ref.namespace, ref.kind, ref.name, ref.container, ref.cluster)


def workload_to_wire(workload: WorkloadId) -> workload_pb2.WorkloadRef:
    """Map a workload id."""
    return workload_pb2.WorkloadRef(
        cluster=workload.cluster,
        namespace=workload.namespace,
        kind=workload.kind,
        name=workload.name,
        container=workload.container,
    )


def profile_from_wire(message: profile_pb2.Profile) -> domain.Profile:
    """Map a runtime Profile to the evidence policygen works from."""
    syscalls = tuple(
        domain.Syscall(s.syscall_name, s.syscall_number, arch_from_wire(s.arch), s.runtime_startup)
        for s in message.syscalls
    )
    arches = [s.arch for s in syscalls if s.arch]
    coverage = message.coverage
    return domain.Profile(
        workload=workload_from_wire(message.workload),
        state=_STATES.get(message.state, domain.ProfileState.UNSPECIFIED),
        name=message.name,
        state_reason=message.state_reason,
        image_digest=message.image_digest,
        arch=max(set(arches), key=arches.count) if arches else "",
        replicas=coverage.replicas_observed,
        observed_seconds=coverage.observed_duration.ToTimedelta().total_seconds(),
        syscalls=syscalls,
        executables=tuple(e.path for e in message.executables),
        file_opens=tuple(
            domain.FileOpen(f.path_pattern, f.writes, tuple(f.executables))
            for f in message.file_opens
        ),
        network_peers=tuple(_peer(p) for p in message.network_peers),
        dns_names={d.dns_name: tuple(d.addresses) for d in message.dns_names},
        capabilities=tuple(
            domain.Capability(c.capability_name, c.allowed_count, c.denied_count, c.runtime_startup)
            for c in message.capabilities
        ),
        user_ids=tuple(
            domain.UserId(u.uid, u.euid, tuple(u.executables)) for u in message.user_ids
        ),
    )


def _peer(peer: profile_pb2.ProfileNetworkPeer) -> domain.NetworkPeer:
    ref = workload_from_wire(peer.peer) if peer.HasField("peer") else None
    return domain.NetworkPeer(
        _DIRECTIONS.get(peer.direction, "connect"),
        protocol_from_wire(peer.protocol),
        peer.address,
        peer.port,
        tuple(peer.dns_names),
        ref,
    )


def readiness_to_wire(state: domain.Readiness) -> readiness_pb2.PolicyReadinessState.ValueType:
    """Map a readiness state."""
    return readiness_pb2.PolicyReadinessState.Value(f"POLICY_READINESS_STATE_{state.name}")


def state_to_wire(state: domain.ProfileState) -> profile_pb2.ProfileState.ValueType:
    """Map a profile state."""
    return STATES_TO_WIRE.get(state, profile_pb2.PROFILE_STATE_UNSPECIFIED)


def seccomp_to_wire(generated: GeneratedSeccomp, formats: set[int]) -> seccomp_pb2.SeccompProfile:
    """Map a generated profile; `formats` empty means every rendering."""
    profile = generated.profile
    wants = formats or {
        seccomp_pb2.SECCOMP_PROFILE_FORMAT_OCI_JSON,
        seccomp_pb2.SECCOMP_PROFILE_FORMAT_SPO,
    }
    verdict = generated.runtime_default
    return seccomp_pb2.SeccompProfile(
        workload=workload_to_wire(profile.workload),
        image_digest=profile.image_digest,
        source_profile=profile.name,
        source_profile_state=state_to_wire(profile.state),
        audit=generated.audit,
        architectures=[arch_to_wire(a) for a in generated.architectures],
        syscall_names=generated.syscall_names,
        oci_json=generated.oci_json()
        if seccomp_pb2.SECCOMP_PROFILE_FORMAT_OCI_JSON in wants
        else "",
        spo_yaml=generated.spo_yaml() if seccomp_pb2.SECCOMP_PROFILE_FORMAT_SPO in wants else "",
        lint_findings=[
            seccomp_pb2.SeccompLintFinding(
                syscall_name=f.syscall,
                severity=severity_pb2.Severity.Value(f"SEVERITY_{f.severity}"),
                reason=f"{f.rule_id}: {f.reason}",
                executables=f.executables,
            )
            for f in generated.lint
        ],
        runtime_default=seccomp_pb2.RuntimeDefaultVerdict(
            safe=verdict.safe, reason=verdict.reason, blocked_syscall_names=verdict.blocked
        ),
        readiness_state=readiness_to_wire(generated.readiness),
        readiness_reason=generated.readiness_reason,
    )


def verification_to_wire(result: Verification) -> seccomp_pb2.SeccompVerification:
    """Map a seccomp verification."""
    run = result.run
    elapsed = Duration()
    elapsed.FromNanoseconds(int(run.elapsed * 1e9))
    negative = result.negative
    return seccomp_pb2.SeccompVerification(
        passed=result.passed,
        exit_status=run.exit_status,
        signal=run.signal,
        timed_out=run.timed_out,
        denied_syscalls=[
            seccomp_pb2.DeniedSyscall(
                syscall_name=d.name,
                syscall_number=d.number,
                arch=arch_to_wire(d.arch),
                executable=d.executable,
                count=d.count,
            )
            for d in result.denied
        ],
        negative_control=seccomp_pb2.NegativeControl(
            syscall_name=negative.syscall, refused=negative.refused, error_number=negative.errno
        ),
        elapsed=elapsed,
        stdout_tail=tail(run.stdout),
        stderr_tail=tail(run.stderr),
        failure_reason=result.failure_reason,
    )


NOTE_KINDS = {
    name: np_pb.NetworkPolicyNoteKind.Value(f"NETWORK_POLICY_NOTE_KIND_{name}")
    for name in (
        "HOST_NETWORK_PEER", "API_SERVER", "DNS_RESOLVER", "LOOPBACK_SKIPPED", "EXTERNAL_PEER",
        "UNRESOLVED_PEER",
    )
}  # fmt: skip
