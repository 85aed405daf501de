"""The network-policies component allows exactly the flows Parallax uses: every pair of
endpoints (Parallax pods, kube-dns, the API server placeholder, a pod in another namespace, an
address on the internet) on every port any flow uses is judged by policygen's NetworkPolicy
evaluator, and the allowed set must equal the expected one."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.deploy.kustomize import Obj

netpol_eval = pytest.importorskip("services.policygen.netpol_eval")
peers = pytest.importorskip("services.policygen.peers")

API_SERVER = "192.0.2.1"  # the placeholder in components/network-policies/api-server.yaml
SERVICES = {"posture": 50051, "runtime": 50052, "policygen": 50053, "correlator": 50054}
STORE_USERS = ("posture", "runtime", "policygen", "correlator")
TRACED = (*STORE_USERS, "agent")


def _expected() -> set[tuple[str, str, str, int]]:
    flows = {
        ("agent", "runtime", "TCP", 50052),
        ("correlator", "posture", "TCP", 50051),
        ("correlator", "runtime", "TCP", 50052),
        ("correlator", "policygen", "TCP", 50053),
        ("policygen", "runtime", "TCP", 50052),  # profiles for workload-named requests
        ("posture", "api-server", "TCP", 443),
        ("posture", "api-server", "TCP", 6443),
        ("policygen", "api-server", "TCP", 443),  # objects for requests that carry none
        ("policygen", "api-server", "TCP", 6443),
        ("agent", "api-server", "TCP", 443),
        ("agent", "api-server", "TCP", 6443),
    }
    flows |= {(name, "postgres", "TCP", 5432) for name in STORE_USERS}
    flows |= {(name, "otel-collector", "TCP", 4317) for name in TRACED}
    everyone = (*TRACED, "postgres", "otel-collector")
    flows |= {(name, "kube-dns", proto, 53) for name in everyone for proto in ("UDP", "TCP")}
    return flows


def _endpoints(objects: list[Obj]) -> dict[str, Any]:
    endpoints: dict[str, Any] = {}
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
    for index, workload in enumerate(workloads, start=10):
        endpoints[workload["metadata"]["name"]] = peers.Endpoint(
            address=f"10.244.0.{index}",
            namespace=workload["metadata"]["namespace"],
            labels=dict(workload["spec"]["template"]["metadata"]["labels"]),
        )
    endpoints["kube-dns"] = peers.Endpoint("10.244.1.2", "kube-system", {"k8s-app": "kube-dns"})
    endpoints["stranger"] = peers.Endpoint("10.244.2.3", "default", {"app": "stranger"})
    endpoints["api-server"] = peers.Endpoint(API_SERVER)
    endpoints["internet"] = peers.Endpoint("198.51.100.7")
    return endpoints


def _evaluator(objects: list[Obj]) -> Any:
    policies = [netpol_eval.parse_policy(o) for o in objects if o["kind"] == "NetworkPolicy"]
    labels = {
        o["metadata"]["name"]: o["metadata"].get("labels", {})
        for o in objects
        if o["kind"] == "Namespace"
    }

    def namespace_labels(name: str) -> dict[str, str]:
        return {**labels.get(name, {}), "kubernetes.io/metadata.name": name}

    return netpol_eval.Evaluator(policies, namespace_labels)


def _allowed(objects: list[Obj]) -> set[tuple[str, str, str, int]]:
    endpoints = _endpoints(objects)
    evaluator = _evaluator(objects)
    ports = {port for *_, port in _expected()} | set(SERVICES.values()) | {80, 8081, 9464}
    ours = {n for n, e in endpoints.items() if e.namespace in ("parallax", "parallax-agent")}
    allowed = set()
    for source, destination in itertools.permutations(endpoints, 2):
        # Flows that start nowhere (bare addresses) or touch no Parallax pod are not ours.
        if endpoints[source].labels is None or not {source, destination} & ours:
            continue
        for protocol, port in itertools.product(("TCP", "UDP"), ports):
            flow = peers.Flow(endpoints[source], endpoints[destination], protocol, port)
            if evaluator.evaluate(flow).allowed:
                allowed.add((source, destination, protocol, port))
    return allowed


def test_exactly_the_parallax_flows_are_allowed(full: list[Obj]) -> None:
    allowed = _allowed(full)
    expected = _expected()
    assert not expected - allowed, f"blocked: {sorted(expected - allowed)}"
    assert not allowed - expected, f"unexpected: {sorted(allowed - expected)}"


@pytest.mark.parametrize(
    ("source", "destination", "port"),
    [
        ("stranger", "runtime", 50052),
        ("stranger", "posture", 50051),
        ("agent", "posture", 50051),
        ("runtime", "posture", 50051),
        ("agent", "postgres", 5432),
        ("posture", "internet", 443),
        ("postgres", "internet", 443),
        ("correlator", "api-server", 443),
    ],
    ids=str,
)
def test_a_foreign_flow_is_denied(
    source: str, destination: str, port: int, full: list[Obj]
) -> None:
    endpoints = _endpoints(full)
    flow = peers.Flow(endpoints[source], endpoints[destination], "TCP", port)
    assert not _evaluator(full).evaluate(flow).allowed


def test_without_the_component_everything_is_open(builds: dict[str, list[Obj]]) -> None:
    # The base alone has no policy; the check above is only meaningful if policies decide.
    assert not [o for o in builds["base"] if o["kind"] == "NetworkPolicy"]
    endpoints = _endpoints(builds["base"])
    flow = peers.Flow(endpoints["stranger"], endpoints["runtime"], "TCP", 50052)
    assert _evaluator(builds["base"]).evaluate(flow).allowed
