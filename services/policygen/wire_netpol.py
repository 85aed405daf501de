"""Translation of NetworkPolicy generation and verification, and of hardening patches, to and
from their protobuf messages (wire.py handles profiles and seccomp)."""

from __future__ import annotations

from parallax.policygen.v1 import hardening_pb2
from parallax.policygen.v1 import network_policy_pb2 as np_pb

from services.policygen import domain, wire
from services.policygen.cluster import Cluster
from services.policygen.hardening import Hardening, value_json
from services.policygen.netpol import GeneratedNetpol
from services.policygen.netpol_verify import NetpolVerification, endpoint_for
from services.policygen.peers import Endpoint, Flow

_DIRECTIONS = {"ingress": np_pb.POLICY_DIRECTION_INGRESS, "egress": np_pb.POLICY_DIRECTION_EGRESS}


def flow_to_wire(flow: Flow, subject: domain.WorkloadId) -> np_pb.Flow:
    """Map a flow; the workload's own end carries its WorkloadRef."""
    return np_pb.Flow(
        source=_endpoint(flow.source, subject),
        destination=_endpoint(flow.destination, subject),
        protocol=wire.protocol_to_wire(flow.protocol),
        port=flow.port,
        dns_names=flow.dns_names[:16],
    )


def _endpoint(endpoint: Endpoint, subject: domain.WorkloadId) -> np_pb.FlowEndpoint:
    message = np_pb.FlowEndpoint(address=endpoint.address, host_network=endpoint.host_network)
    if not endpoint.address and endpoint.labels is not None:
        message.workload.CopyFrom(wire.workload_to_wire(subject))
    return message


def flow_from_wire(message: np_pb.Flow, cluster: Cluster) -> Flow:
    """Map a wire flow, resolving each end's labels from the cluster's objects."""
    ends = []
    for end in (message.source, message.destination):
        ref = wire.workload_from_wire(end.workload) if end.HasField("workload") else None
        ends.append(endpoint_for(cluster, end.address, ref, end.host_network))
    return Flow(
        ends[0],
        ends[1],
        wire.protocol_from_wire(message.protocol),
        message.port,
        tuple(message.dns_names),
    )


def generated_to_wire(generated: GeneratedNetpol) -> np_pb.GeneratedNetworkPolicy:
    """Map a generated policy."""
    states = (p.state for p in generated.profiles)
    return np_pb.GeneratedNetworkPolicy(
        workload=wire.workload_to_wire(generated.workload),
        format=np_pb.NETWORK_POLICY_FORMAT_CILIUM
        if generated.cilium
        else np_pb.NETWORK_POLICY_FORMAT_KUBERNETES,
        policy_yaml=generated.policy_yaml,
        dns_entries=[
            np_pb.DnsEntry(dns_name=e.name, addresses=e.addresses) for e in generated.dns_entries
        ],
        notes=[
            np_pb.NetworkPolicyNote(kind=wire.NOTE_KINDS[k], message=m) for k, m in generated.notes
        ],
        flows=[flow_to_wire(f, generated.workload) for f in generated.flows],
        source_profile_state=wire.state_to_wire(domain.least_complete(states)),
        readiness_state=wire.readiness_to_wire(generated.readiness),
        readiness_reason=generated.readiness_reason,
    )


def verification_to_wire(
    result: NetpolVerification, subject: domain.WorkloadId
) -> np_pb.NetworkPolicyVerification:
    """Map a NetworkPolicy verification."""
    return np_pb.NetworkPolicyVerification(
        passed=result.passed,
        flow_verdicts=[
            np_pb.FlowVerdict(
                flow=flow_to_wire(flow, subject),
                allowed=verdict.allowed,
                deciding_policies=verdict.deciding,
                reason=verdict.reason,
            )
            for flow, verdict in result.verdicts
        ],
        extra_allowances=[
            np_pb.ExtraAllowance(
                policy=e.policy, direction=_DIRECTIONS[e.direction], peer=e.peer, ports=e.ports
            )
            for e in result.extras
        ],
        existing_policies=result.existing,
        existing_diff=result.diff,
    )


def hardening_to_wire(
    result: Hardening, profiles: list[domain.Profile]
) -> hardening_pb2.HardeningPatch:
    """Map a hardening patch."""
    return hardening_pb2.HardeningPatch(
        workload=wire.workload_to_wire(result.workload),
        patch_yaml=result.yaml_text,
        changes=[
            hardening_pb2.HardeningChange(
                container_name=c.container,
                field_path=c.field_path,
                value_json=value_json(c),
                evidence=c.evidence,
                control_ids=c.control_ids,
            )
            for c in result.changes
        ],
        skipped_changes=[
            hardening_pb2.SkippedChange(
                container_name=s.container, field_path=s.field_path, reason=s.reason
            )
            for s in result.skipped
        ],
        source_profile_state=wire.state_to_wire(domain.least_complete(p.state for p in profiles)),
        readiness_state=wire.readiness_to_wire(result.readiness),
        readiness_reason=result.readiness_reason,
    )
