"""PolicygenService through a real stub to a real server on port 0 with the real interceptor
chain: the five RPCs on the recorded cart profile and the shop objects (inline and through the
runtime fetchers), a verification round trip of generated flows, and the status codes of bad
requests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace import TracerProvider
from parallax.policygen.v1 import network_policy_pb2 as np_pb
from parallax.policygen.v1 import policygen_service_pb2 as pb
from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc
from parallax.policygen.v1 import readiness_pb2, seccomp_pb2
from parallax.runtime.v1 import profile_pb2
from parallax.type.v1 import source_pb2, workload_pb2

from servicekit import serve
from servicekit.channels import connect
from servicekit.errors import FailedPrecondition
from services.policygen import seccomp
from services.policygen.servicer import PolicygenServicer, registration
from tests.policygen.conftest import TESTDATA, profile_message

CART = workload_pb2.WorkloadRef(
    namespace="shop", kind="Deployment", name="cart", container="server"
)
OBJECTS = [
    source_pb2.Manifest(uri="objects.yaml", content=(TESTDATA / "objects.yaml").read_bytes())
]


def _fetch(ref: workload_pb2.WorkloadRef, digest: str) -> profile_pb2.Profile:
    if ref.name != "cart":
        raise FailedPrecondition(f"no runtime profile for {ref.name} yet")
    return profile_message()


@pytest.fixture(scope="module")
def stub() -> Iterator[pb_grpc.PolicygenServiceStub]:
    servicer = PolicygenServicer(_fetch, lambda ref: [_fetch(ref, "")])
    running = serve.start(
        [registration(servicer)], listen="127.0.0.1:0", tracer_provider=TracerProvider()
    )
    channel = connect(running.address, timeout=30)
    yield pb_grpc.PolicygenServiceStub(channel)
    channel.close()
    running.stop(grace=1)


def test_generate_seccomp_inline_and_by_workload(stub: pb_grpc.PolicygenServiceStub) -> None:
    inline = stub.GenerateSeccompProfile(
        pb.GenerateSeccompProfileRequest(profile=profile_message()), timeout=10
    )
    fetched = stub.GenerateSeccompProfile(
        pb.GenerateSeccompProfileRequest(
            workload=CART, formats=[seccomp_pb2.SECCOMP_PROFILE_FORMAT_SPO]
        ),
        timeout=10,
    )
    profile = inline.seccomp_profile
    assert profile.oci_json == (TESTDATA / "cart.seccomp.json").read_text()
    assert profile.spo_yaml == (TESTDATA / "cart.seccompprofile.yaml").read_text()
    assert "unknown" not in profile.syscall_names
    assert [f.syscall_name for f in profile.lint_findings] == ["keyctl"]
    assert not profile.runtime_default.safe and list(
        profile.runtime_default.blocked_syscall_names
    ) == ["keyctl"]
    assert profile.readiness_state == readiness_pb2.POLICY_READINESS_STATE_UNVERIFIED
    assert fetched.seccomp_profile.spo_yaml and not fetched.seccomp_profile.oci_json


def test_generate_seccomp_errors(stub: pb_grpc.PolicygenServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        stub.GenerateSeccompProfile(pb.GenerateSeccompProfileRequest(), timeout=10)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = workload_pb2.WorkloadRef(
        namespace="shop", kind="Deployment", name="ghost", container="c"
    )
    with pytest.raises(grpc.RpcError) as none:
        stub.GenerateSeccompProfile(pb.GenerateSeccompProfileRequest(workload=other), timeout=10)
    assert none.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_verify_seccomp_profile(stub: pb_grpc.PolicygenServiceStub, tmp_path: Path) -> None:
    from tests.policygen.test_enforcement import record

    profile = record(["/bin/true"], tmp_path / "trace.log")
    text = seccomp.generate(profile, seccomp.SeccompOptions()).oci_json()
    request = pb.VerifySeccompProfileRequest(
        profile_json=text, argv=["/bin/true"], timeout=Duration(seconds=20)
    )
    verification = stub.VerifySeccompProfile(request, timeout=30).verification
    assert verification.passed, verification.failure_reason
    assert verification.negative_control.refused and verification.negative_control.error_number == 1
    with pytest.raises(grpc.RpcError) as bad:
        stub.VerifySeccompProfile(pb.VerifySeccompProfileRequest(profile_json=text), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_generate_and_verify_network_policy(stub: pb_grpc.PolicygenServiceStub) -> None:
    ref = workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
    request = pb.GenerateNetworkPolicyRequest(
        workload=ref, profiles=[profile_message()], objects=OBJECTS
    )
    generated = stub.GenerateNetworkPolicy(request, timeout=10).network_policy
    assert generated.policy_yaml == (TESTDATA / "cart.networkpolicy.yaml").read_text()
    assert generated.readiness_state == readiness_pb2.POLICY_READINESS_STATE_READY
    assert [e.dns_name for e in generated.dns_entries] == ["api.payments.example"]
    assert np_pb.NETWORK_POLICY_NOTE_KIND_DNS_RESOLVER in {n.kind for n in generated.notes}
    verify = pb.VerifyNetworkPolicyRequest(
        policies_yaml=generated.policy_yaml, flows=generated.flows, objects=OBJECTS, workload=ref
    )
    verification = stub.VerifyNetworkPolicy(verify, timeout=10).verification
    assert verification.passed and len(verification.flow_verdicts) == len(generated.flows)
    assert list(verification.existing_policies) == ["shop/cart-allow-frontend"]
    by_workload = stub.VerifyNetworkPolicy(
        pb.VerifyNetworkPolicyRequest(
            policies_yaml=generated.policy_yaml, workload=ref, objects=OBJECTS
        ),
        timeout=10,
    )
    assert by_workload.verification.passed


def test_cilium_and_missing_objects(stub: pb_grpc.PolicygenServiceStub) -> None:
    ref = workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
    request = pb.GenerateNetworkPolicyRequest(
        workload=ref, format=np_pb.NETWORK_POLICY_FORMAT_CILIUM, objects=OBJECTS
    )
    generated = stub.GenerateNetworkPolicy(request, timeout=10).network_policy
    assert generated.policy_yaml == (TESTDATA / "cart.ciliumnetworkpolicy.yaml").read_text()
    with pytest.raises(grpc.RpcError) as missing:
        stub.GenerateNetworkPolicy(pb.GenerateNetworkPolicyRequest(workload=ref), timeout=10)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_generate_hardening(stub: pb_grpc.PolicygenServiceStub) -> None:
    ref = workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
    request = pb.GenerateHardeningRequest(
        workload=ref, objects=OBJECTS, seccomp_localhost_profile="operator/shop-cart-server.json"
    )
    patch = stub.GenerateHardening(request, timeout=10).hardening_patch
    assert patch.patch_yaml == (TESTDATA / "cart.hardening.yaml").read_text()
    fields = {c.field_path.rsplit(".", 1)[-1]: c for c in patch.changes}
    assert fields["readOnlyRootFilesystem"].value_json == "true"
    assert fields["readOnlyRootFilesystem"].control_ids == ["CTR-03"]
    assert patch.source_profile_state == profile_pb2.PROFILE_STATE_COMPLETE
    with pytest.raises(grpc.RpcError) as bad:
        stub.GenerateHardening(pb.GenerateHardeningRequest(), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
