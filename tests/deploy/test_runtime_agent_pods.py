"""The deploy side of binding agents to their node: with per-pod (csi-driver) agent
certificates the runtime may get pods in the agents' namespace and nothing else, holds a
projected token to do it, reaches the API server through the NetworkPolicies and is configured
for that namespace; with the shared agent Secret it has no API access and accepts the unbound
certificate explicitly."""

from __future__ import annotations

import re
from typing import Any

import pytest

from servicekit import pki
from services.runtime.kubepods import AgentPodSettings
from tests.deploy.kustomize import Obj

CSI = "overlays/dev-csi-agent"
SHARED = "overlays/dev"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _runtime_pod(objects: list[Obj]) -> Obj:
    pod: Obj = _find(objects, "Deployment", "runtime")["spec"]["template"]["spec"]
    return pod


def _settings(objects: list[Obj]) -> AgentPodSettings:
    env = _runtime_pod(objects)["containers"][0]["env"]
    return AgentPodSettings.from_env({e["name"]: e["value"] for e in env if "value" in e})


def _grants_to_runtime(objects: list[Obj]) -> set[tuple[str, str, str, str]]:
    """(namespace, group, resource, verb) granted to the runtime's ServiceAccount."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}  # fmt: skip
    grants = set()
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = {(s["namespace"], s["name"]) for s in binding["subjects"]}
        if ("parallax", "runtime") not in subjects:
            continue
        namespace = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"])]
        grants |= {
            (namespace or "*", group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    return grants


def test_with_pod_certificates_the_runtime_may_only_get_agent_pods(
    builds: dict[str, list[Obj]],
) -> None:
    objects = builds[CSI]
    agents = _find(objects, "DaemonSet", "agent")["metadata"]["namespace"]
    assert _grants_to_runtime(objects) == {(agents, "", "pods", "get")}
    settings = _settings(objects)
    assert settings.in_cluster and settings.namespace == agents
    assert not settings.accept_unbound


def test_with_pod_certificates_the_runtime_token_is_projected_and_short_lived(
    builds: dict[str, list[Obj]],
) -> None:
    pod = _runtime_pod(builds[CSI])
    assert pod["automountServiceAccountToken"] is False  # only the runtime container gets it
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    sources = volume["projected"]["sources"]
    (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert token["path"] == "token" and token["expirationSeconds"] <= 3600
    assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)


def test_the_pod_the_csi_certificate_names_is_one_the_runtime_may_read(
    builds: dict[str, list[Obj]],
) -> None:
    objects = builds[CSI]
    agent = _find(objects, "DaemonSet", "agent")
    (volume,) = [v for v in agent["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    uris = volume["csi"]["volumeAttributes"]["csi.cert-manager.io/uri-sans"].split(",")
    values = {
        "POD_NAMESPACE": agent["metadata"]["namespace"],
        "POD_NAME": "agent-x7k2p",
        "POD_UID": "4f1c2a9e-6b1d-4c8e-9a55-0d3f7e2b8c11",
        "SERVICE_ACCOUNT_NAME": "agent",
    }
    expanded = [re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], u.strip()) for u in uris]
    pods = [p for p in map(pki.PodRef.parse, expanded) if p is not None]
    assert [p.namespace for p in pods] == [_settings(objects).namespace]


def test_with_pod_certificates_the_runtime_reaches_the_api_server(
    builds: dict[str, list[Obj]],
) -> None:
    flows: Any = pytest.importorskip("tests.deploy.test_network_policies")
    peers: Any = pytest.importorskip("services.policygen.peers")
    objects = builds[CSI]
    endpoints, evaluator = flows._endpoints(objects), flows._evaluator(objects)
    for port, allowed in ((443, True), (6443, True), (80, False)):
        flow = peers.Flow(endpoints["runtime"], endpoints["api-server"], "TCP", port)
        assert evaluator.evaluate(flow).allowed is allowed, port
    internet = peers.Flow(endpoints["runtime"], endpoints["internet"], "TCP", 443)
    assert not evaluator.evaluate(internet).allowed


def test_with_the_shared_agent_secret_the_runtime_has_no_api_access(
    builds: dict[str, list[Obj]],
) -> None:
    objects = builds[SHARED]
    assert _grants_to_runtime(objects) == set()
    pod = _runtime_pod(objects)
    assert pod["automountServiceAccountToken"] is False
    assert not [v for v in pod["volumes"] if "projected" in v]
    settings = _settings(objects)
    assert not settings.cluster_access
    assert settings.accept_unbound  # explicit: the shared certificate names no node or pod


def test_the_base_refuses_unbound_agent_certificates(builds: dict[str, list[Obj]]) -> None:
    settings = _settings(builds["base"])
    assert not settings.accept_unbound and not settings.cluster_access
