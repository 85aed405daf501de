"""The PolicygenService servicer: each RPC parses its request, calls the pure generators or the
verifiers, and builds the response. Profiles come inline or from the runtime service; objects
come inline or, when the request has none, from the configured cluster (`cluster_source`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parallax.policygen.v1 import network_policy_pb2 as np_pb
from parallax.policygen.v1 import policygen_service_pb2 as pb
from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc
from parallax.runtime.v1 import profile_pb2
from parallax.type.v1 import source_pb2, workload_pb2

from servicekit import serve
from servicekit.errors import FailedPrecondition, InvalidArgument
from services.policygen import cluster_parse, hardening, netpol, netpol_verify, seccomp, wire
from services.policygen import verify_seccomp as vs
from services.policygen import wire_netpol as wn
from services.policygen.cluster import Cluster
from services.policygen.cluster_source import ClusterSource
from services.policygen.domain import WorkloadId

SERVICE_NAME = "parallax.policygen.v1.PolicygenService"
MAX_OBJECT_BYTES = 12 * 1024 * 1024
ProfileFetch = Callable[[workload_pb2.WorkloadRef, str], profile_pb2.Profile]
ProfileList = Callable[[workload_pb2.WorkloadRef], list[profile_pb2.Profile]]


class PolicygenServicer(pb_grpc.PolicygenServiceServicer):
    """Generates and verifies policies; stateless."""

    def __init__(
        self, fetch: ProfileFetch, list_profiles: ProfileList, cluster: ClusterSource | None = None
    ) -> None:
        self.fetch = fetch
        self.list_profiles = list_profiles
        self.cluster = cluster

    def GenerateSeccompProfile(
        self, request: pb.GenerateSeccompProfileRequest, context: Any
    ) -> pb.GenerateSeccompProfileResponse:
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidArgument("set workload or profile")
        message = (
            request.profile
            if source == "profile"
            else self.fetch(request.workload, request.image_digest)
        )
        options = seccomp.SeccompOptions(
            audit=request.audit,
            include_runtime_base=request.include_runtime_base_profile,
            architectures=tuple(wire.arch_from_wire(a) for a in request.architectures),
            spo_name=request.spo_name,
        )
        generated = seccomp.generate(wire.profile_from_wire(message), options)
        profile = wire.seccomp_to_wire(generated, set(request.formats))
        return pb.GenerateSeccompProfileResponse(seccomp_profile=profile)

    def VerifySeccompProfile(
        self, request: pb.VerifySeccompProfileRequest, context: Any
    ) -> pb.VerifySeccompProfileResponse:
        timeout = (
            request.timeout.ToTimedelta().total_seconds()
            if request.HasField("timeout")
            else vs.DEFAULT_TIMEOUT
        )
        verification = vs.verify(
            vs.VerifyRequest(
                request.profile_json,
                tuple(request.argv),
                dict(request.env),
                request.working_directory,
                timeout,
                request.negative_control_syscall,
            ),
            # A caller that goes away (or the server's grace period ending) kills the command.
            cancelled=lambda: context is not None and not context.is_active(),
        )
        return pb.VerifySeccompProfileResponse(verification=wire.verification_to_wire(verification))

    def GenerateNetworkPolicy(
        self, request: pb.GenerateNetworkPolicyRequest, context: Any
    ) -> pb.GenerateNetworkPolicyResponse:
        workload = wire.workload_from_wire(request.workload)
        profiles = self._profiles(request.workload, list(request.profiles))
        cilium = request.format == np_pb.NETWORK_POLICY_FORMAT_CILIUM
        objects = self._objects(request.objects, workload)
        generated = netpol.generate(workload, profiles, objects, use_cilium=cilium)
        return pb.GenerateNetworkPolicyResponse(network_policy=wn.generated_to_wire(generated))

    def VerifyNetworkPolicy(
        self, request: pb.VerifyNetworkPolicyRequest, context: Any
    ) -> pb.VerifyNetworkPolicyResponse:
        workload = wire.workload_from_wire(request.workload)
        cluster = self._objects(request.objects, workload)
        candidates = netpol_verify.load_policies(request.policies_yaml)
        if request.flows:
            flows = [wn.flow_from_wire(f, cluster) for f in request.flows]
        else:
            profiles = self._profiles(request.workload, [])
            flows = list(netpol.generate(workload, profiles, cluster, use_cilium=False).flows)
        result = netpol_verify.verify(candidates, flows, cluster, request.include_existing_policies)
        return pb.VerifyNetworkPolicyResponse(
            verification=wn.verification_to_wire(result, workload)
        )

    def GenerateHardening(
        self, request: pb.GenerateHardeningRequest, context: Any
    ) -> pb.GenerateHardeningResponse:
        workload = wire.workload_from_wire(request.workload)
        if not (workload.namespace and workload.kind and workload.name):
            raise InvalidArgument("workload needs namespace, kind and name")
        profiles = self._profiles(request.workload, list(request.profiles))
        wanted = request.objects or self.cluster is not None
        objects = self._objects(request.objects, workload, network=False) if wanted else Cluster()
        manifest = objects.workload(workload.namespace, workload.kind, workload.name)
        result = hardening.harden(workload, profiles, manifest, request.seccomp_localhost_profile)
        patch = wn.hardening_to_wire(result, profiles)
        return pb.GenerateHardeningResponse(hardening_patch=patch)

    def _profiles(
        self, ref: workload_pb2.WorkloadRef, inline: list[profile_pb2.Profile]
    ) -> list[Any]:
        messages = inline or self.list_profiles(ref)
        return [wire.profile_from_wire(m) for m in messages]

    def _objects(self, objects: Any, workload: WorkloadId, *, network: bool = True) -> Cluster:
        """The request's inline objects, else the configured cluster's (`network` adds what
        peers resolve against to the workload itself)."""
        manifests: list[source_pb2.Manifest] = list(objects)
        if manifests:
            return _parse(manifests)
        if self.cluster is None:
            raise FailedPrecondition(
                "objects are required: this policygen has no cluster access configured "
                "(PARALLAX_KUBECONFIG or PARALLAX_IN_CLUSTER=true); send the Kubernetes "
                "objects inline instead"
            )
        return self.cluster.read(workload, network=network)


def _parse(manifests: list[source_pb2.Manifest]) -> Cluster:
    if sum(len(m.content) for m in manifests) > MAX_OBJECT_BYTES:
        raise InvalidArgument(f"objects total more than {MAX_OBJECT_BYTES} bytes")
    return cluster_parse.load(
        (m.uri or f"inline-{i}", bytes(m.content)) for i, m in enumerate(manifests)
    )


def registration(servicer: PolicygenServicer) -> serve.Registration:
    """Mount `servicer` as parallax.policygen.v1.PolicygenService."""
    return serve.Registration(
        SERVICE_NAME,
        lambda server: pb_grpc.add_PolicygenServiceServicer_to_server(servicer, server),
    )
