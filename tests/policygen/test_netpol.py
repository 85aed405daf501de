"""NetworkPolicy generation from the recorded cart profile and the shop cluster: golden
Kubernetes and Cilium policies, the formats.md conventions (stable labels, namespaceSelector only
across namespaces, Services mapped to backing pods and target ports, /32 ipBlocks with a DNS side
table, DNS to the real resolver pods, loopback skipped, host-network and API server explicit)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from servicekit.errors import FailedPrecondition
from services.policygen import cluster_parse, netpol
from services.policygen.cluster import Cluster
from services.policygen.domain import NetworkPeer, Profile, ProfileState, Readiness


def test_kubernetes_and_cilium_match_the_golden_files(
    cart: Profile, shop: Cluster, golden: Callable[[str, str], None]
) -> None:
    golden(
        "cart.networkpolicy.yaml",
        netpol.generate(cart.workload, [cart], shop, use_cilium=False).policy_yaml,
    )
    golden(
        "cart.ciliumnetworkpolicy.yaml",
        netpol.generate(cart.workload, [cart], shop, use_cilium=True).policy_yaml,
    )


def _rules(cart: Profile, shop: Cluster, direction: str) -> list[dict[str, object]]:
    generated = netpol.generate(cart.workload, [cart], shop, use_cilium=False)
    return list(generated.document["spec"][direction])


def test_pod_selector_drops_controller_and_volatile_labels(cart: Profile, shop: Cluster) -> None:
    spec = netpol.generate(cart.workload, [cart], shop, use_cilium=False).document["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "cart", "tier": "web"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]


def test_same_namespace_peer_has_no_namespace_selector(cart: Profile, shop: Cluster) -> None:
    peers = [p for rule in _rules(cart, shop, "ingress") for p in rule["from"]]  # type: ignore[attr-defined]
    assert {"podSelector": {"matchLabels": {"app": "frontend"}}} in peers


def test_service_peer_maps_to_backing_pods_and_target_port(cart: Profile, shop: Cluster) -> None:
    rule = next(r for r in _rules(cart, shop, "egress") if "app" in str(r) and "postgres" in str(r))
    assert rule["to"] == [
        {
            "podSelector": {"matchLabels": {"app": "postgres"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]


def test_dns_selects_the_resolver_pods_not_the_service_labels(cart: Profile, shop: Cluster) -> None:
    rule = next(r for r in _rules(cart, shop, "egress") if "coredns" in str(r))
    assert rule["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "coredns"}}  # type: ignore[index]
    assert rule["ports"] == [{"protocol": "TCP", "port": 53}, {"protocol": "UDP", "port": 53}]
    assert "kube-dns" not in str(rule)


def test_external_api_server_and_host_peers(cart: Profile, shop: Cluster) -> None:
    generated = netpol.generate(cart.workload, [cart], shop, use_cilium=False)
    egress = str(generated.document["spec"]["egress"])
    assert "93.184.216.34/32" in egress and "172.18.0.2/32" in egress
    assert "10.96.0.1" not in egress and "127.0.0.1" not in egress
    assert [(e.name, e.addresses) for e in generated.dns_entries] == [
        ("api.payments.example", ("93.184.216.34",))
    ]
    kinds = {kind for kind, _ in generated.notes}
    assert kinds == {
        "HOST_NETWORK_PEER",
        "API_SERVER",
        "LOOPBACK_SKIPPED",
        "EXTERNAL_PEER",
        "DNS_RESOLVER",
    }


def test_generated_policy_is_ready_only_from_complete_evidence(
    cart: Profile, shop: Cluster
) -> None:
    assert (
        netpol.generate(cart.workload, [cart], shop, use_cilium=False).readiness is Readiness.READY
    )
    partial = dataclasses.replace(cart, state=ProfileState.PARTIAL, state_reason="PARTIAL: drops")
    generated = netpol.generate(cart.workload, [partial], shop, use_cilium=False)
    assert generated.readiness is Readiness.INSUFFICIENT_EVIDENCE
    assert "PARTIAL: drops" in generated.readiness_reason


@pytest.mark.parametrize(
    ("address", "note", "cidr"),
    [
        ("169.254.20.10", "NodeLocal DNS", "169.254.20.10/32"),
        ("169.254.169.254", "cloud metadata", "169.254.169.254/32"),
    ],
    ids=["nodelocal", "cloud"],
)
def test_link_local_resolvers(
    cart: Profile, shop: Cluster, address: str, note: str, cidr: str
) -> None:
    peers = (NetworkPeer("udp_send", "UDP", address, 53),)
    profile = dataclasses.replace(cart, network_peers=peers, dns_names={})
    generated = netpol.generate(cart.workload, [profile], shop, use_cilium=False)
    (rule,) = generated.document["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": cidr}}]
    assert any(note in message for _, message in generated.notes)


def test_dns_names_without_observed_dns_flow_still_allow_the_resolver(
    cart: Profile, shop: Cluster
) -> None:
    profile = dataclasses.replace(cart, network_peers=())
    generated = netpol.generate(cart.workload, [profile], shop, use_cilium=False)
    assert "coredns" in str(generated.document["spec"]["egress"])


def test_host_network_pod_peer_is_an_ipblock(cart: Profile) -> None:
    objects = b"""
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec: {template: {metadata: {labels: {app: cart}}, spec: {containers: [{name: server}]}}}
---
apiVersion: v1
kind: Pod
metadata: {name: exporter-abc, namespace: monitoring, labels: {app: exporter}}
spec: {hostNetwork: true, containers: [{name: e}]}
status: {podIP: 10.0.0.7}
"""
    cluster = cluster_parse.load([("o.yaml", objects)])
    profile = dataclasses.replace(
        cart, network_peers=(NetworkPeer("connect", "TCP", "10.0.0.7", 9100),), dns_names={}
    )
    generated = netpol.generate(cart.workload, [profile], cluster, use_cilium=False)
    assert generated.document["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.0.0.7/32"}}], "ports": [{"protocol": "TCP", "port": 9100}]}
    ]
    assert [k for k, _ in generated.notes] == ["HOST_NETWORK_PEER"]


def test_workload_missing_from_objects_is_a_failed_precondition(cart: Profile) -> None:
    with pytest.raises(FailedPrecondition, match="not among the objects"):
        netpol.generate(cart.workload, [cart], Cluster(), use_cilium=False)


def test_cilium_uses_fqdns_entities_and_the_dns_proxy(cart: Profile, shop: Cluster) -> None:
    spec = netpol.generate(cart.workload, [cart], shop, use_cilium=True).document["spec"]
    egress = spec["egress"]
    assert {"matchName": "api.payments.example"} in next(r for r in egress if "toFQDNs" in r)[
        "toFQDNs"
    ]
    assert any(r.get("toEntities") == ["kube-apiserver"] for r in egress)
    dns = next(r for r in egress if "coredns" in str(r))
    assert dns["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}
