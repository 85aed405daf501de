"""Table-driven tests of the network and namespace controls, with LabelSelector semantics."""

from __future__ import annotations

from typing import Any

import pytest

from services.posture.rules.engine import selector_matches
from tests.posture.test_rules_workload import (
    LABELS,
    Case,
    check_case,
    deployment,
    findings_of,
    policy,
)


def namespace(name: str = "shop", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def service(kind: str = "ClusterIP", port: int = 80, name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"type": kind, "selector": LABELS, "ports": [{"port": port}]},
    }


def ingress(tls: bool = True, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web"}}}]}}]
    }
    if tls:
        spec["tls"] = [{"hosts": ["shop.example.com"], "secretName": "tls"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations or {}},
        "spec": spec,
    }


OTHER_NS = [deployment(namespace="elsewhere")]
SNIPPET = {"nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x;"}
NETWORK_CASES = [
    Case("NET-01", OTHER_NS, [deployment()]),
    Case("NET-02", [deployment(namespace="net"), policy(["Egress"], "net")]),
    Case("NET-09", [deployment(namespace="net"), policy(["Ingress"], "net")]),
    Case("NET-03", [namespace("empty")], [namespace("shop")]),
    Case("NET-04", [deployment(), service("LoadBalancer")], [deployment(), service()]),
    Case(
        "NET-05",
        [deployment(name="jenkins"), service("NodePort")],
        [deployment(name="jenkins"), service()],
    ),
    Case("NET-06", [deployment(), service(port=22)], [deployment(), service(port=8080)]),
    Case("NET-07", [ingress(tls=False)], [ingress()]),
    Case("NET-08", [ingress(annotations=SNIPPET)], [ingress()]),
    Case(
        "NS-01",
        [namespace("shop", **{"pod-security.kubernetes.io/enforce": "privileged"})],
        [namespace("shop", **{"pod-security.kubernetes.io/enforce": "restricted"})],
    ),
]


@pytest.mark.parametrize("case", NETWORK_CASES, ids=[c.control for c in NETWORK_CASES])
def test_network_control(case: Case) -> None:
    check_case(case)


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"app": "shop"}}, True),
        ({"matchLabels": {"app": "other"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["shop", "x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["shop"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "Bogus"}]}, False),
        ({"matchLabels": "app=shop"}, False),
        ("not a selector", False),
    ],
    ids=lambda value: str(value)[:40],
)
def test_label_selector_semantics(selector: Any, matches: bool) -> None:
    assert selector_matches(selector, {"app": "shop", "tier": "web"}) is matches


def labelled(name: str, labels: dict[str, str], namespace: str = "shop") -> dict[str, Any]:
    """A Deployment whose pods carry `labels`."""
    obj = deployment(name=name, namespace=namespace)
    obj["spec"]["template"]["metadata"]["labels"] = labels
    return obj


def selecting_service(selector: dict[str, str], name: str, port: int = 80) -> dict[str, Any]:
    obj = service("NodePort", port, name)
    obj["spec"]["selector"] = selector
    return obj


WEB = {"app": "shop", "tier": "web", "zone": "a"}


# Services are looked up through one pair of their selector; every pair must still match.
@pytest.mark.parametrize(
    ("selector", "selects"),
    [
        ({"app": "shop", "tier": "web"}, True),
        ({"zone": "a", "tier": "web"}, True),
        ({"app": "shop", "tier": "db"}, False),
        ({"tier": "web", "role": "x"}, False),
        ({"app": "other"}, False),
        ({}, False),
    ],
    ids=str,
)
def test_service_selection_needs_every_selector_pair(
    selector: dict[str, str], selects: bool
) -> None:
    objects = [labelled("web", WEB), labelled("elsewhere", WEB, "other")]
    exposed = findings_of([*objects, selecting_service(selector, "front")], "NET-04")
    assert [f.object.name for f in exposed] == (["web"] if selects else [])
    ssh = findings_of([*objects, selecting_service(selector, "sshd", 22)], "NET-06")
    assert [f.object.name for f in ssh] == (["sshd"] if selects else [])


def test_exposure_lists_every_selecting_service() -> None:
    services = [
        selecting_service({"tier": "web"}, "b"),
        selecting_service({"app": "shop"}, "a"),
        selecting_service({"app": "shop", "tier": "db"}, "c"),
    ]
    (finding,) = findings_of([labelled("web", WEB), *services], "NET-04")
    assert finding.message.endswith("via Service/a (NodePort), Service/b (NodePort)")


def test_policy_coverage_is_judged_per_namespace_and_label_set() -> None:
    objects = [
        labelled("covered", {"app": "shop"}),
        labelled("twin", {"app": "shop"}),
        labelled("uncovered", {"app": "shop"}, "net"),
        labelled("other-labels", {"app": "db"}),
    ]
    unselected = findings_of(objects, "NET-01")
    assert sorted(f.object.name for f in unselected) == ["other-labels", "uncovered"]
