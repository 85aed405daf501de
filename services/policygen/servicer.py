"""The PolicygenService servicer. Generation and verification of seccomp profiles,
NetworkPolicies and hardening patches are built in the policygen issue; until then each RPC
answers UNIMPLEMENTED and says what is missing."""

from __future__ import annotations

from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc

from servicekit.pending import with_pending

PolicygenServicer = with_pending(
    pb_grpc.PolicygenServiceServicer,
    "PolicygenService",
    {
        "GenerateSeccompProfile": "seccomp generation from runtime profiles is not built yet",
        "VerifySeccompProfile": "seccomp verification under libseccomp is not built yet",
        "GenerateNetworkPolicy": "NetworkPolicy generation from observed flows is not built yet",
        "VerifyNetworkPolicy": "the NetworkPolicy evaluator is not built yet",
        "GenerateHardening": "securityContext hardening patches are not built yet",
    },
)
