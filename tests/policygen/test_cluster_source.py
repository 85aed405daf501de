"""PolicygenService reading its objects from a live cluster when a request has none: a real stub
to a real server on port 0 whose ClusterSource holds a kubeconfig for the test API server
(tests/kubeapi.py), which serves the shop cluster or a variant with a custom CoreDNS."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from parallax.policygen.v1 import network_policy_pb2 as np_pb
from parallax.policygen.v1 import policygen_service_pb2 as pb
from parallax.policygen.v1 import policygen_service_pb2_grpc as pb_grpc
from parallax.policygen.v1 import readiness_pb2
from parallax.type.v1 import workload_pb2

from servicekit import serve
from servicekit.channels import connect
from services.policygen.cluster_source import ClusterSource
from services.policygen.config import Settings
from services.policygen.servicer import PolicygenServicer, registration
from tests.kubeapi import KubeAPIServer, read_manifests
from tests.policygen.conftest import TESTDATA, profile_message

TOKEN = "policygen-token"
CART = workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
SHOP = read_manifests(TESTDATA / "objects.yaml")
JSON = dict[str, Any]
Stub = pb_grpc.PolicygenServiceStub


def _write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "policygen", "user": {"token": TOKEN}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "test", "user": "policygen"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


@contextmanager
def _serving(cluster: ClusterSource | None) -> Iterator[Stub]:
    servicer = PolicygenServicer(
        lambda ref, digest: profile_message(), lambda ref: [profile_message()], cluster
    )
    running = serve.start(
        [registration(servicer)], listen="127.0.0.1:0", tracer_provider=TracerProvider()
    )
    channel = connect(running.address, timeout=30)
    try:
        yield pb_grpc.PolicygenServiceStub(channel)
    finally:
        channel.close()
        running.stop(grace=1)


Live = Callable[[list[JSON]], tuple[KubeAPIServer, Stub]]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """Start the API server holding the given objects and a policygen configured for it."""
    with KubeAPIServer(token=TOKEN) as kube:
        config = _write_kubeconfig(tmp_path / "kubeconfig", kube.url)
        with _serving(ClusterSource(str(config), in_cluster=False)) as stub:

            def start(objects: list[JSON]) -> tuple[KubeAPIServer, Stub]:
                for obj in objects:
                    kube.apply(obj)
                return kube, stub

            yield start


def _generate(stub: Stub, **fields: Any) -> np_pb.GeneratedNetworkPolicy:
    request = pb.GenerateNetworkPolicyRequest(workload=CART, **fields)
    return stub.GenerateNetworkPolicy(request, timeout=30).network_policy


def test_the_cluster_gives_the_policy_its_manifests_give(live: Live) -> None:
    kube, stub = live(SHOP)
    generated = _generate(stub)
    assert generated.policy_yaml == (TESTDATA / "cart.networkpolicy.yaml").read_text()
    assert generated.readiness_state == readiness_pb2.POLICY_READINESS_STATE_READY
    cilium = _generate(stub, format=np_pb.NETWORK_POLICY_FORMAT_CILIUM)
    assert cilium.policy_yaml == (TESTDATA / "cart.ciliumnetworkpolicy.yaml").read_text()
    paths = {r.path for r in kube.requests}
    assert "/api/v1/namespaces/default/endpoints" in paths and "/api/v1/endpoints" not in paths
    assert "/apis/apps/v1/namespaces/shop/deployments" in paths
    assert not any(p.endswith(("/statefulsets", "/secrets", "/configmaps")) for p in paths)


def _custom_dns_cluster() -> list[JSON]:
    """The shop cluster with the trap of a self-managed CoreDNS: the kube-dns Service selects
    k8s-app=kube-dns but is itself labelled otherwise, its pods carry an extra label and serve
    on 5353; and postgres listens on 6432 behind its Service's port 5432."""
    objects = [
        copy.deepcopy(o) for o in SHOP if o["metadata"]["name"] != "coredns-5d78c9869d-abcde"
    ]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    dns = by_name["Service", "kube-dns"]
    dns["metadata"]["labels"] = {"app.kubernetes.io/name": "coredns-custom", "team": "platform"}
    dns["spec"]["selector"] = {"k8s-app": "kube-dns"}
    for kind in ("StatefulSet", "Pod"):
        owner = by_name[kind, "postgres" if kind == "StatefulSet" else "postgres-0"]
        spec = owner["spec"]["template"]["spec"] if kind == "StatefulSet" else owner["spec"]
        spec["containers"][0]["ports"] = [{"name": "pg", "containerPort": 6432}]
    resolvers = [
        _coredns_pod(name, ip) for name, ip in (("a1", "10.244.0.3"), ("b2", "10.244.3.4"))
    ]
    decoy = _coredns_pod("decoy", "10.244.3.9")  # same app label, not selected by the Service
    decoy["metadata"]["labels"] = {"app": "coredns-custom"}
    return [*objects, *resolvers, decoy]


def _coredns_pod(suffix: str, ip: str) -> JSON:
    ports = [
        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 5353, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
    ]
    labels = {"k8s-app": "kube-dns", "app": "coredns-custom", "pod-template-hash": f"h{suffix}"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"coredns-{suffix}", "namespace": "kube-system", "labels": labels},
        "spec": {"containers": [{"name": "coredns", "image": "coredns:1.11", "ports": ports}]},
        "status": {"podIP": ip},
    }


def _egress_to(policy: JSON, namespace: str) -> list[JSON]:
    name = "kubernetes.io/metadata.name"
    return [
        rule
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
        if (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get(name) == namespace
    ]


def test_dns_egress_selects_the_resolver_pods_found_in_the_cluster(live: Live) -> None:
    _, stub = live(_custom_dns_cluster())
    generated = _generate(stub)
    policy = yaml.safe_load(generated.policy_yaml)
    (dns,) = _egress_to(policy, "kube-system")
    assert dns["to"][0]["podSelector"] == {
        "matchLabels": {"app": "coredns-custom", "k8s-app": "kube-dns"}
    }
    assert dns["ports"] == [{"protocol": "TCP", "port": 5353}, {"protocol": "UDP", "port": 5353}]
    (postgres,) = _egress_to(policy, "db")
    assert postgres["to"][0]["podSelector"] == {"matchLabels": {"app": "postgres"}}
    assert postgres["ports"] == [{"protocol": "TCP", "port": 6432}]
    notes = [n.message for n in generated.notes]
    assert any("the 2 pods the Service selects" in n for n in notes), notes
    assert generated.readiness_state == readiness_pb2.POLICY_READINESS_STATE_READY


def test_verify_diffs_against_the_policies_in_the_cluster(live: Live) -> None:
    _, stub = live(SHOP)
    generated = _generate(stub)
    request = pb.VerifyNetworkPolicyRequest(
        policies_yaml=generated.policy_yaml, workload=CART, include_existing_policies=True
    )
    verification = stub.VerifyNetworkPolicy(request, timeout=30).verification
    assert verification.passed
    assert len(verification.flow_verdicts) == len(generated.flows)
    assert list(verification.existing_policies) == ["shop/cart-allow-frontend"]
    diff = verification.existing_diff
    assert "-  name: cart-allow-frontend\n" in diff and "+  name: cart-parallax\n" in diff
    for bookkeeping in ("resourceVersion", "uid", "creationTimestamp"):
        assert bookkeeping not in diff


def test_hardening_reads_the_workload_from_the_cluster(live: Live) -> None:
    kube, stub = live(SHOP)
    request = pb.GenerateHardeningRequest(
        workload=CART, seccomp_localhost_profile="operator/shop-cart-server.json"
    )
    patch = stub.GenerateHardening(request, timeout=30).hardening_patch
    assert patch.patch_yaml == (TESTDATA / "cart.hardening.yaml").read_text()
    assert {r.path for r in kube.requests} == {"/apis/apps/v1/namespaces/shop/deployments"}


def _status(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    return failed.value


def test_a_kind_policygen_may_not_list_fails_the_request_naming_it(live: Live) -> None:
    kube, stub = live(SHOP)
    kube.forbid("endpoints")
    error = _status(lambda: _generate(stub))
    assert "Cannot list Endpoints (v1) in namespace default: HTTP 403" in str(error.details())


def test_unreachable_cluster_and_no_cluster_access(tmp_path: Path) -> None:
    with KubeAPIServer() as kube:
        url = kube.url  # nothing listens there once the server has stopped
    source = ClusterSource(str(_write_kubeconfig(tmp_path / "kubeconfig", url)), False)
    with _serving(source) as stub:
        assert "did not answer" in str(_status(lambda: _generate(stub)).details())
    with _serving(None) as stub:
        details = str(_status(lambda: _generate(stub)).details())
    assert "no cluster access configured" in details and "PARALLAX_KUBECONFIG" in details


@pytest.mark.parametrize(
    ("env", "access"),
    [
        ({}, False),
        ({"PARALLAX_KUBECONFIG": "/etc/parallax/kubeconfig"}, True),
        ({"PARALLAX_IN_CLUSTER": "true"}, True),
        ({"PARALLAX_IN_CLUSTER": "no"}, False),
    ],
    ids=["none", "kubeconfig", "in-cluster", "in-cluster-off"],
)
def test_settings_enable_cluster_access(env: dict[str, str], access: bool) -> None:
    settings = Settings.from_env({"PARALLAX_INSECURE": "true", **env})
    assert settings.cluster_access is access
