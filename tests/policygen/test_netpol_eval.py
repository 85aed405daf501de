"""The NetworkPolicy evaluator, table-driven from the Kubernetes documentation's semantics:
default allow, isolation per direction, policyTypes defaults, selectors with matchExpressions,
namespaceSelector alone and with podSelector, ipBlock with except, ports with endPort and named
ports, protocols, additive policies; plus the formats.md traps (DNS blocked when the policy uses
the kube-dns Service's labels instead of the CoreDNS pods')."""

from __future__ import annotations

from typing import Any

import pytest

from services.policygen import netpol_verify
from services.policygen.cluster import ContainerPort
from services.policygen.netpol_eval import Evaluator, parse_policy, selector_matches
from services.policygen.peers import Endpoint, Flow

NAMESPACES = {"shop": {"team": "shop"}, "db": {"team": "data"}, "kube-system": {}}
WEB = Endpoint("10.0.1.1", "shop", {"app": "web", "tier": "front"})
API = Endpoint(
    "10.0.1.2", "shop", {"app": "api", "tier": "back"}, ports=(ContainerPort("http", 8080, "TCP"),)
)
DB = Endpoint("10.0.2.1", "db", {"app": "db"})
COREDNS = Endpoint("10.0.3.1", "kube-system", {"k8s-app": "coredns"})
OUTSIDE = Endpoint("203.0.113.9")


def policy(name: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def allowed(
    policies: list[dict[str, Any]],
    source: Endpoint,
    destination: Endpoint,
    port: int = 8080,
    protocol: str = "TCP",
) -> bool:
    evaluator = Evaluator(
        [parse_policy(p) for p in policies],
        lambda n: {**NAMESPACES.get(n, {}), "kubernetes.io/metadata.name": n},
    )
    return evaluator.evaluate(Flow(source, destination, protocol, port)).allowed


API_ONLY = {"matchLabels": {"app": "api"}}
CASES: list[tuple[str, list[dict[str, Any]], Endpoint, Endpoint, int, str, bool]] = [
    ("nothing selects: default allow", [], WEB, API, 8080, "TCP", True),
    ("deny-all ingress", [policy("deny")], WEB, API, 8080, "TCP", False),
    ("deny-all ingress leaves egress open", [policy("deny")], API, OUTSIDE, 443, "TCP", True),
    (
        "ingress-only policy does not isolate egress",
        [policy("deny", podSelector=API_ONLY)],
        API,
        OUTSIDE,
        443,
        "TCP",
        True,
    ),
    (
        "egress rules imply the Egress type",
        [
            policy(
                "e",
                podSelector=API_ONLY,
                egress=[{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            )
        ],
        API,
        OUTSIDE,
        443,
        "TCP",
        False,
    ),
    (
        "explicit Egress with no rules denies egress",
        [policy("e", podSelector=API_ONLY, policyTypes=["Egress"])],
        API,
        WEB,
        80,
        "TCP",
        False,
    ),
    (
        "explicit Egress only keeps ingress open",
        [policy("e", podSelector=API_ONLY, policyTypes=["Egress"])],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "podSelector peer in same namespace",
        [
            policy(
                "i",
                podSelector=API_ONLY,
                ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            )
        ],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "podSelector peer does not reach other namespaces",
        [policy("i", podSelector=API_ONLY, ingress=[{"from": [{"podSelector": {}}]}])],
        DB,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "namespaceSelector alone: all pods there",
        [
            policy(
                "i",
                podSelector=API_ONLY,
                ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]}],
            )
        ],
        DB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "namespaceSelector AND podSelector",
        [
            policy(
                "i",
                podSelector=API_ONLY,
                ingress=[
                    {
                        "from": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"app": "web"}},
                            }
                        ]
                    }
                ],
            )
        ],
        DB,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "two peers are OR",
        [
            policy(
                "i",
                podSelector=API_ONLY,
                ingress=[
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"team": "data"}}},
                            {"podSelector": {"matchLabels": {"app": "web"}}},
                        ]
                    }
                ],
            )
        ],
        DB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "matchExpressions In",
        [
            policy(
                "i",
                podSelector={
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]
                },
                ingress=[
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "app", "operator": "NotIn", "values": ["db"]}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            )
        ],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "matchExpressions DoesNotExist",
        [
            policy(
                "i",
                podSelector=API_ONLY,
                ingress=[
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "tier", "operator": "DoesNotExist"}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            )
        ],
        WEB,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "ipBlock allows",
        [
            policy(
                "e",
                podSelector=API_ONLY,
                policyTypes=["Egress"],
                egress=[{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
            )
        ],
        API,
        OUTSIDE,
        443,
        "TCP",
        True,
    ),
    (
        "ipBlock except",
        [
            policy(
                "e",
                podSelector=API_ONLY,
                policyTypes=["Egress"],
                egress=[
                    {"to": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.8/29"]}}]}
                ],
            )
        ],
        API,
        OUTSIDE,
        443,
        "TCP",
        False,
    ),
    (
        "port matches",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"port": 8080}]}])],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "protocol defaults to TCP",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"port": 8080}]}])],
        WEB,
        API,
        8080,
        "UDP",
        False,
    ),
    (
        "endPort range",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"port": 8000, "endPort": 8100}]}])],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "endPort range excludes",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"port": 8000, "endPort": 8010}]}])],
        WEB,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "named port resolves on the destination pod",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"port": "http"}]}])],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "named port the pod does not declare",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"port": "grpc"}]}])],
        WEB,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "port without number: whole protocol",
        [policy("i", podSelector=API_ONLY, ingress=[{"ports": [{"protocol": "TCP"}]}])],
        WEB,
        API,
        9999,
        "TCP",
        True,
    ),
    (
        "policies add up",
        [
            policy("deny", podSelector=API_ONLY),
            policy(
                "allow",
                podSelector=API_ONLY,
                ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            ),
        ],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "both sides must allow",
        [
            policy(
                "eg",
                podSelector={"matchLabels": {"app": "web"}},
                policyTypes=["Egress"],
                egress=[{}],
            ),
            policy("in", podSelector=API_ONLY),
        ],
        WEB,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "empty rule allows everything",
        [policy("i", podSelector=API_ONLY, ingress=[{}])],
        OUTSIDE,
        API,
        8080,
        "TCP",
        True,
    ),
    (
        "external source matches only ipBlock",
        [policy("i", podSelector=API_ONLY, ingress=[{"from": [{"namespaceSelector": {}}]}])],
        OUTSIDE,
        API,
        8080,
        "TCP",
        False,
    ),
    (
        "host-network pods are not isolated",
        [policy("deny", podSelector={})],
        WEB,
        Endpoint("10.0.0.5", "shop", None, True),
        10250,
        "TCP",
        True,
    ),
    (
        "policy in another namespace does not apply",
        [policy("deny", namespace="db")],
        WEB,
        API,
        8080,
        "TCP",
        True,
    ),
    # formats.md trap: the kube-dns Service is labelled k8s-app=kube-dns, its pods k8s-app=coredns.
    (
        "DNS to Service labels is blocked",
        [
            policy(
                "dns",
                podSelector=API_ONLY,
                policyTypes=["Egress"],
                egress=[
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"port": 53, "protocol": "UDP"}],
                    }
                ],
            )
        ],
        API,
        COREDNS,
        53,
        "UDP",
        False,
    ),
    (
        "DNS to the resolver pods' labels",
        [
            policy(
                "dns",
                podSelector=API_ONLY,
                policyTypes=["Egress"],
                egress=[
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"k8s-app": "coredns"}},
                            }
                        ],
                        "ports": [{"port": 53, "protocol": "UDP"}],
                    }
                ],
            )
        ],
        API,
        COREDNS,
        53,
        "UDP",
        True,
    ),
    (
        "DNS over TCP needs its own port entry",
        [
            policy(
                "dns",
                podSelector=API_ONLY,
                policyTypes=["Egress"],
                egress=[
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"k8s-app": "coredns"}},
                            }
                        ],
                        "ports": [{"port": 53, "protocol": "UDP"}],
                    }
                ],
            )
        ],
        API,
        COREDNS,
        53,
        "TCP",
        False,
    ),
]


@pytest.mark.parametrize(
    ("policies", "source", "destination", "port", "protocol", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_semantics(
    policies: list[dict[str, Any]],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str,
    expected: bool,
) -> None:
    assert allowed(policies, source, destination, port, protocol) is expected


def test_unknown_operator_is_rejected() -> None:
    with pytest.raises(netpol_verify.InvalidArgument, match="operator"):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Like"}]}, {})


def test_verdict_names_deciding_and_isolating_policies() -> None:
    evaluator = Evaluator([parse_policy(policy("deny", podSelector=API_ONLY))], lambda n: {})
    verdict = evaluator.evaluate(Flow(WEB, API, "TCP", 8080))
    assert not verdict.allowed and verdict.deciding == ("shop/deny",)
    assert "ingress denied" in verdict.reason
    assert evaluator.evaluate(Flow(API, WEB, "TCP", 80)).deciding == ()
