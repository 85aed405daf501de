"""NetworkPolicy generation end to end: find the workload's pod template in the objects,
resolve its observed peers, render the Kubernetes or Cilium policy, and check the Kubernetes one
with the evaluator against the observed flows before calling it ready. Called by the servicer and
`parallax netpol`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servicekit.errors import FailedPrecondition, InvalidArgument
from services.policygen import cilium, netpol_flows, netpol_gen, netpol_verify
from services.policygen.cluster import Cluster, Pod
from services.policygen.domain import Profile, Readiness, WorkloadId, readiness
from services.policygen.netpol_eval import parse_policy
from services.policygen.peers import Flow, flows


@dataclass(frozen=True)
class GeneratedNetpol:
    """A generated policy with its side table, notes, flows and readiness."""

    workload: WorkloadId
    cilium: bool
    document: dict[str, Any]
    policy_yaml: str
    dns_entries: tuple[netpol_gen.DnsEntry, ...]
    notes: tuple[tuple[str, str], ...]
    flows: tuple[Flow, ...]
    profiles: tuple[Profile, ...]
    readiness: Readiness
    readiness_reason: str


def template_of(workload: WorkloadId, cluster: Cluster) -> Pod:
    """Return the workload's pod template (or pod); FailedPrecondition when not in the objects."""
    if not (workload.namespace and workload.kind and workload.name):
        raise InvalidArgument("workload needs namespace, kind and name")
    found = cluster.workload(workload.namespace, workload.kind, workload.name)
    if found is not None:
        return found.template
    pod = next(
        (p for p in cluster.pods if (p.namespace, p.name) == (workload.namespace, workload.name)),
        None,
    )
    if workload.kind == "Pod" and pod is not None:
        return pod
    raise FailedPrecondition(
        f"{workload.namespace}/{workload.kind}/{workload.name} is not among the objects given; "
        "its pod labels are needed for the policy's podSelector"
    )


def generate(
    workload: WorkloadId, profiles: list[Profile], cluster: Cluster, *, use_cilium: bool
) -> GeneratedNetpol:
    """Generate the policy for `workload` from its containers' `profiles`."""
    if not profiles:
        raise FailedPrecondition("no runtime profile for the workload yet")
    template = template_of(workload, cluster)
    resolution = netpol_flows.resolve(profiles, cluster, template)
    observed = flows(resolution)
    if use_cilium:
        document = cilium.cilium_policy(workload, template, resolution)
        state, reason = readiness(profiles)
    else:
        document = netpol_gen.kubernetes_policy(workload, template, resolution)
        result = netpol_verify.verify([parse_policy(document)], observed, cluster, False)
        state, reason = readiness(profiles, result.passed)
        if state is Readiness.READY:
            reason = f"every one of the {len(observed)} observed flows is allowed by the policy"
    return GeneratedNetpol(
        workload,
        use_cilium,
        document,
        netpol_gen.to_yaml([document]),
        netpol_gen.dns_entries(resolution),
        tuple(resolution.notes),
        tuple(observed),
        tuple(profiles),
        state,
        reason,
    )
