"""The demo's policy step through the policygen contract: for one workload, a seccomp profile
(generated, then verified by running the service's start-up under real enforcement), a
NetworkPolicy (generated, then verified against the observed flows) and a hardening patch.
Each becomes a report Policy; the NetworkPolicy's verdicts become report Flows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from parallax.policygen.v1 import network_policy_pb2 as np_pb
from parallax.policygen.v1 import policygen_service_pb2 as pb
from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc
from parallax.policygen.v1 import seccomp_pb2
from parallax.type.v1 import source_pb2, workload_pb2

from cli import report_model as m
from cli.report_collect import readiness, workload_name

TIMEOUT = 60.0
VERIFY_SECONDS = 20


@dataclass(frozen=True)
class Generated:
    """What the policy step made for one workload."""

    policies: list[m.Policy]
    flows: list[m.Flow]
    seccomp_json: str


def _endpoint(e: np_pb.FlowEndpoint, names: Mapping[str, str]) -> str:
    if e.workload.name:
        return e.workload.name
    return names.get(e.address, e.address or "?")


def seccomp(
    stub: pb_grpc.PolicygenServiceStub,
    ref: workload_pb2.WorkloadRef,
    check_argv: Sequence[str],
    env: Mapping[str, str],
) -> tuple[m.Policy, str]:
    """Generate the OCI profile (with the runtime's start-up syscalls) and verify it by running
    the service's start-up (`check_argv`) under it; the negative control must be refused."""
    request = pb.GenerateSeccompProfileRequest(
        workload=ref,
        formats=[seccomp_pb2.SECCOMP_PROFILE_FORMAT_OCI_JSON],
        include_runtime_base_profile=True,
    )
    made = stub.GenerateSeccompProfile(request, timeout=TIMEOUT).seccomp_profile
    verify = pb.VerifySeccompProfileRequest(
        profile_json=made.oci_json,
        argv=list(check_argv),
        env=dict(env),
        timeout=Duration(seconds=VERIFY_SECONDS),
    )
    proof = stub.VerifySeccompProfile(verify, timeout=TIMEOUT).verification
    control = proof.negative_control
    summary = (
        f"{len(made.syscall_names)} syscalls allowed; start-up ran under enforcement "
        f"(exit {proof.exit_status}, {len(proof.denied_syscalls)} denied); "
        f"{control.syscall_name} {'refused' if control.refused else 'NOT refused'}"
    )
    details = [f"lint {f.syscall_name}: {f.reason}" for f in made.lint_findings]
    details += [
        f"denied {d.syscall_name} by {d.executable} x{d.count}" for d in proof.denied_syscalls
    ]
    if not proof.passed:
        details.append(f"failure: {proof.failure_reason}")
    details.append(f"RuntimeDefault safe: {'yes' if made.runtime_default.safe else 'no'}")
    state = readiness(made.readiness_state)
    policy = m.Policy(
        workload_name(ref),
        "seccomp",
        "READY" if state == "UNVERIFIED" and proof.passed else state,
        proof.passed,
        summary,
        details,
        made.oci_json,
    )
    return policy, made.oci_json


def network_policy(
    stub: pb_grpc.PolicygenServiceStub,
    ref: workload_pb2.WorkloadRef,
    objects: Sequence[source_pb2.Manifest],
    names: Mapping[str, str],
) -> tuple[m.Policy, list[m.Flow]]:
    """Generate the workload's NetworkPolicy from its observed flows and verify that it admits
    every one of them; `names` labels addresses that are not pods."""
    request = pb.GenerateNetworkPolicyRequest(workload=ref, objects=list(objects))
    made = stub.GenerateNetworkPolicy(request, timeout=TIMEOUT).network_policy
    verify = pb.VerifyNetworkPolicyRequest(
        policies_yaml=made.policy_yaml, flows=list(made.flows), workload=ref, objects=list(objects)
    )
    proof = stub.VerifyNetworkPolicy(verify, timeout=TIMEOUT).verification
    flows = [
        m.Flow(
            _endpoint(v.flow.source, names),
            _endpoint(v.flow.destination, names),
            v.flow.port,
            "UDP" if v.flow.protocol == 2 else "TCP",
            v.allowed,
            v.reason,
        )
        for v in proof.flow_verdicts
    ]
    allowed = sum(1 for v in proof.flow_verdicts if v.allowed)
    details = [n.message for n in made.notes]
    details += [f"also allows {x.peer} on {x.ports}" for x in proof.extra_allowances]
    policy = m.Policy(
        workload_name(ref),
        "networkpolicy",
        readiness(made.readiness_state),
        proof.passed,
        f"{allowed}/{len(proof.flow_verdicts)} observed flows allowed; everything else denied",
        details,
        made.policy_yaml,
    )
    return policy, flows


def hardening(
    stub: pb_grpc.PolicygenServiceStub,
    ref: workload_pb2.WorkloadRef,
    objects: Sequence[source_pb2.Manifest],
    localhost_profile: str,
) -> m.Policy:
    """Generate the evidence-backed securityContext patch."""
    request = pb.GenerateHardeningRequest(
        workload=ref, objects=list(objects), seccomp_localhost_profile=localhost_profile
    )
    made = stub.GenerateHardening(request, timeout=TIMEOUT).hardening_patch
    details = [f"{c.field_path} = {c.value_json}: {c.evidence}" for c in made.changes]
    details += [f"kept {s.field_path}: {s.reason}" for s in made.skipped_changes]
    return m.Policy(
        workload_name(ref),
        "hardening",
        readiness(made.readiness_state),
        None,
        f"{len(made.changes)} changes, {len(made.skipped_changes)} kept with a reason",
        details,
        made.patch_yaml,
    )


def for_workload(
    stub: pb_grpc.PolicygenServiceStub,
    ref: workload_pb2.WorkloadRef,
    objects: Sequence[source_pb2.Manifest],
    check: tuple[Sequence[str], Mapping[str, str]],
    names: Mapping[str, str],
) -> Generated:
    """All three policies of one workload."""
    container = workload_pb2.WorkloadRef()
    container.CopyFrom(ref)
    container.container = ref.name
    profile, oci = seccomp(stub, container, *check)
    netpol, flows = network_policy(stub, ref, objects, names)
    patch = hardening(stub, ref, objects, f"shop/{ref.name}.json")
    return Generated([profile, netpol, patch], flows, oci)
