"""The own-node decision for agents, without a server: node certificates compare their node,
pod certificates the node the API server binds their pod to (cached for a bounded time on an
injected clock), and an agent certificate naming neither is refused unless configured."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from servicekit.authz import Identity
from servicekit.config import ConfigError
from servicekit.errors import PermissionDenied, Unavailable
from servicekit.pki import PodRef
from services.runtime.agentnodes import (
    AgentNodes,
    Placement,
    PodsUnreachable,
    placement_of,
    refusal,
)
from services.runtime.kubepods import AgentPodSettings
from tests.runtime.server import Clock

NS = "parallax-agent"
POD = PodRef(NS, "agent-a")
HERE = Placement(uid="u1", node="n1", terminated=False)


@pytest.mark.parametrize(
    ("pod", "placement", "reason"),
    [
        (POD, HERE, None),
        (PodRef(NS, "agent-a", "u1"), HERE, None),
        (POD, None, "does not exist"),
        (PodRef(NS, "agent-a", "u0"), HERE, "with UID u0; that pod is gone (now u1)"),
        (POD, Placement("u1", "n2", False), "is the agent of node n2"),
        (POD, Placement("u1", "", False), "not bound to a node"),
        (POD, Placement("u1", "n1", True), "has terminated"),
    ],
    ids=["own-node", "own-node-uid", "missing", "other-uid", "other-node", "unscheduled",
         "terminated"],
)  # fmt: skip
def test_refusal(pod: PodRef, placement: Placement | None, reason: str | None) -> None:
    found = refusal(pod, placement, "n1")
    assert found is None if reason is None else reason in (found or "")


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"metadata": {"uid": "u1"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}},
         HERE),
        ({"metadata": {"uid": "u1", "deletionTimestamp": "2025-01-01T00:00:00Z"},
          "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}, HERE),
        ({"metadata": {"uid": "u1"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}},
         Placement("u1", "n1", True)),
        ({"metadata": {"uid": "u1"}, "spec": {}, "status": {"phase": "Pending"}},
         Placement("u1", "", False)),
        ({}, Placement("", "", False)),
    ],
    ids=["running", "terminating", "failed", "pending", "empty"],
)  # fmt: skip
def test_placement_of_a_pod_object(pod: Mapping[str, object], expected: Placement) -> None:
    assert placement_of(pod) == expected


class Pods:
    """A pod table standing in for the API server, counting reads."""

    def __init__(self, pods: dict[tuple[str, str], Placement]) -> None:
        self.pods, self.reads, self.down = pods, 0, False

    def __call__(self, namespace: str, name: str) -> Placement | None:
        self.reads += 1
        if self.down:
            raise PodsUnreachable("connection refused")
        return self.pods.get((namespace, name))


def agent(
    node: str = "", pod: PodRef | None = None, roles: tuple[str, ...] = ("agent",)
) -> Identity:
    return Identity("agent-a", frozenset(roles), node, pod)


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def pods() -> Pods:
    return Pods({(NS, "agent-a"): HERE})


@pytest.fixture
def nodes(pods: Pods, clock: Clock) -> AgentNodes:
    return AgentNodes(pods, clock, namespace=NS, ttl=30.0)


@pytest.mark.parametrize(
    ("caller", "node"),
    [
        (None, "anything"),
        (agent(node="n1"), "n1"),
        (agent(pod=POD), "n1"),
        (agent(node="n1", pod=PodRef(NS, "elsewhere")), "n1"),
        (Identity("cli", frozenset({"admin"})), "n9"),
    ],
    ids=["plaintext", "node-cert", "pod-cert", "node-wins", "admin-without-node"],
)
def test_accepted(nodes: AgentNodes, caller: Identity | None, node: str) -> None:
    nodes.check(caller, node)


@pytest.mark.parametrize(
    ("caller", "message"),
    [
        (agent(node="n2"), "agent-a is the agent of node n2; it may not report for 'n1'"),
        (agent(pod=PodRef(NS, "agent-b")), "names pod parallax-agent/agent-b, which does not"),
        (agent(pod=PodRef("default", "agent-a")), "outside the agents' namespace"),
        (agent(pod=PodRef(NS, "agent-a", "u0")), "that pod is gone"),
        (agent(), "names neither a node"),
        (agent(roles=("agent", "admin")), "names neither a node"),
    ],
    ids=["other-node", "unknown-pod", "other-namespace", "uid-mismatch", "unbound",
         "unbound-admin-agent"],
)  # fmt: skip
def test_refused(nodes: AgentNodes, caller: Identity, message: str) -> None:
    with pytest.raises(PermissionDenied, match=message.replace("(", r"\(")):
        nodes.check(caller, "n1")


def test_pod_reads_are_cached_for_the_ttl_only(nodes: AgentNodes, pods: Pods, clock: Clock) -> None:
    nodes.check(agent(pod=POD), "n1")
    pods.pods[(NS, "agent-a")] = Placement("u1", "n2", False)  # the API server now says n2
    clock.now += 29.9
    nodes.check(agent(pod=POD), "n1")  # still the cached answer
    assert pods.reads == 1
    clock.now += 0.2
    with pytest.raises(PermissionDenied, match="agent of node n2"):
        nodes.check(agent(pod=POD), "n1")
    assert pods.reads == 2


def test_a_missing_pod_is_cached_too(nodes: AgentNodes, pods: Pods, clock: Clock) -> None:
    stranger = agent(pod=PodRef(NS, "agent-b"))
    for _ in range(3):
        with pytest.raises(PermissionDenied):
            nodes.check(stranger, "n1")
    assert pods.reads == 1
    pods.pods[(NS, "agent-b")] = HERE
    clock.now += 31
    nodes.check(stranger, "n1")


def test_an_unreachable_api_server_is_unavailable_and_not_cached(
    nodes: AgentNodes, pods: Pods
) -> None:
    pods.down = True
    with pytest.raises(Unavailable, match="connection refused"):
        nodes.check(agent(pod=POD), "n1")
    pods.down = False
    nodes.check(agent(pod=POD), "n1")
    assert pods.reads == 2


def test_the_cache_is_bounded(pods: Pods, clock: Clock) -> None:
    pods.pods.update({(NS, f"agent-{i}"): HERE for i in range(5)})
    nodes = AgentNodes(pods, clock, namespace=NS, capacity=2)
    for i in (0, 1, 2, 0):
        nodes.check(agent(pod=PodRef(NS, f"agent-{i}")), "n1")
    assert pods.reads == 4  # agent-0 was evicted by agent-2


def test_without_kubernetes_access_pod_agents_are_refused(clock: Clock) -> None:
    nodes = AgentNodes(None, clock, namespace=NS)
    with pytest.raises(PermissionDenied, match="no Kubernetes access"):
        nodes.check(agent(pod=POD), "n1")
    nodes.check(agent(node="n1"), "n1")


def test_unbound_agents_only_when_configured(pods: Pods, clock: Clock) -> None:
    AgentNodes(pods, clock, namespace=NS, accept_unbound=True).check(agent(), "n7")
    assert pods.reads == 0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, AgentPodSettings("", False, NS, 30.0, False)),
        ({"PARALLAX_IN_CLUSTER": "true", "PARALLAX_AGENT_NAMESPACE": "agents",
          "PARALLAX_AGENT_POD_CACHE_SECONDS": "5", "PARALLAX_ACCEPT_UNBOUND_AGENTS": "TRUE"},
         AgentPodSettings("", True, "agents", 5.0, True)),
        ({"PARALLAX_KUBECONFIG": "/k"}, AgentPodSettings("/k", False, NS, 30.0, False)),
    ],
    ids=["defaults", "in-cluster", "kubeconfig"],
)  # fmt: skip
def test_settings(env: dict[str, str], expected: AgentPodSettings) -> None:
    assert AgentPodSettings.from_env(env) == expected
    assert expected.cluster_access == bool(
        env.get("PARALLAX_IN_CLUSTER") or env.get("PARALLAX_KUBECONFIG")
    )


@pytest.mark.parametrize(
    "env",
    [
        {"PARALLAX_AGENT_NAMESPACE": "Not/A-Namespace"},
        {"PARALLAX_AGENT_POD_CACHE_SECONDS": "0"},
        {"PARALLAX_AGENT_POD_CACHE_SECONDS": "3601"},
        {"PARALLAX_ACCEPT_UNBOUND_AGENTS": "yes"},
    ],
    ids=["namespace", "ttl-low", "ttl-high", "flag"],
)
def test_bad_settings_fail_fast(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        AgentPodSettings.from_env(env)
