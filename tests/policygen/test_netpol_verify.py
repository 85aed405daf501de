"""VerifyNetworkPolicy's domain: the generated policy allows every observed flow, extra
allowances are listed, existing policies selecting the same pods are found and diffed, and a
policy written with the kube-dns Service's labels fails on the DNS flow."""

from __future__ import annotations

from services.policygen import netpol, netpol_verify
from services.policygen.cluster import Cluster
from services.policygen.domain import Profile


def test_generated_policy_passes_and_is_diffed_against_the_existing(
    cart: Profile, shop: Cluster
) -> None:
    generated = netpol.generate(cart.workload, [cart], shop, use_cilium=False)
    candidates = netpol_verify.load_policies(generated.policy_yaml)
    result = netpol_verify.verify(candidates, list(generated.flows), shop, include_existing=False)
    assert result.passed and len(result.verdicts) == 7
    assert all(v.deciding == ("shop/cart-parallax",) for _, v in result.verdicts if v.deciding)
    assert result.existing == ("shop/cart-allow-frontend",)
    assert "-  name: cart-allow-frontend" in result.diff and "+  name: cart-parallax" in result.diff


def test_extra_allowances_list_broad_and_unused_rules(cart: Profile, shop: Cluster) -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: wide, namespace: shop}
spec:
  podSelector: {matchLabels: {app: cart}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
  - to: [{podSelector: {matchLabels: {app: ghost}}}]
    ports: [{port: 9000, endPort: 9100}]
"""
    generated = netpol.generate(cart.workload, [cart], shop, use_cilium=False)
    result = netpol_verify.verify(
        netpol_verify.load_policies(text), list(generated.flows), shop, False
    )
    assert not result.passed
    described = {(e.peer, e.ports) for e in result.extras}
    assert ("0.0.0.0/0 except 10.0.0.0/8", "all ports") in described
    assert ("pods app=ghost in namespace shop", "TCP 9000-9100") in described


def test_dns_policy_with_service_labels_blocks_dns(cart: Profile, shop: Cluster) -> None:
    generated = netpol.generate(cart.workload, [cart], shop, use_cilium=False)
    broken = generated.policy_yaml.replace("k8s-app: coredns", "k8s-app: kube-dns")
    result = netpol_verify.verify(
        netpol_verify.load_policies(broken), list(generated.flows), shop, False
    )
    denied = [f for f, v in result.verdicts if not v.allowed]
    assert {(f.protocol, f.port) for f in denied} == {("UDP", 53), ("TCP", 53)}


def test_existing_policies_add_up_when_included(cart: Profile, shop: Cluster) -> None:
    generated = netpol.generate(cart.workload, [cart], shop, use_cilium=False)
    deny_all = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: cart-parallax, namespace: shop}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n"
    )
    alone = netpol_verify.verify(
        netpol_verify.load_policies(deny_all), list(generated.flows), shop, False
    )
    together = netpol_verify.verify(
        netpol_verify.load_policies(deny_all), list(generated.flows), shop, True
    )
    frontend = [
        i for i, (f, _) in enumerate(alone.verdicts) if f.source.labels == {"app": "frontend"}
    ]
    assert not alone.verdicts[frontend[0]][1].allowed
    assert together.verdicts[frontend[0]][1].allowed  # cart-allow-frontend adds up
