"""The rendered workloads keep the hardening and wiring deploy/ promises: Pod Security
"restricted" for everything in the parallax namespace, probes on the plaintext health port,
limits, per-component TLS Secrets, the ports `parallax up` uses, least-privilege RBAC, and an
agent with exactly its four capabilities and read-only host mounts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cli.supervisor import DEFAULT_PORTS, UPSTREAMS
from services.policygen import cluster_source
from services.posture.cluster import KINDS
from tests.deploy.kustomize import Obj

SERVICES = tuple(DEFAULT_PORTS)
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
AGENT_CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN", "SYSLOG"}
AGENT_HOST_PATHS = {
    "/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/lib/modules", "/usr/src",
}  # fmt: skip
HEALTH_PORT = 8081


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _workloads(objects: list[Obj]) -> Iterator[Obj]:
    return (o for o in objects if o["kind"] in WORKLOAD_KINDS)


def _env(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _pod(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def test_parallax_namespace_pods_meet_pod_security_restricted(full: list[Obj]) -> None:
    namespace = _find(full, "Namespace", "parallax")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    checked = 0
    for workload in _workloads(full):
        if workload["metadata"]["namespace"] != "parallax":
            continue
        pod = _pod(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for flag in ("hostPID", "hostIPC", "hostNetwork"):
            assert not pod.get(flag)
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "projected",
                                              "persistentVolumeClaim"}  # fmt: skip
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsUser"] != 0
            checked += 1
    assert checked == 6  # four services, postgres, the collector


@pytest.mark.parametrize("service", SERVICES)
def test_service_listens_where_parallax_up_does_and_probes_the_health_port(
    service: str, full: list[Obj]
) -> None:
    port = DEFAULT_PORTS[service]
    pod = _pod(_find(full, "Deployment", service))
    (container,) = pod["containers"]
    env = _env(container)
    assert env["PARALLAX_LISTEN"] == f"[::]:{port}"
    assert env["PARALLAX_HEALTH_LISTEN"] == f"[::]:{HEALTH_PORT}"
    assert {p["containerPort"] for p in container["ports"]} == {port, HEALTH_PORT}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": HEALTH_PORT}, probe
    svc = _find(full, "Service", service)
    assert [p["port"] for p in svc["spec"]["ports"]] == [port]
    assert svc["spec"]["selector"] == pod_labels(full, "Deployment", service, "name")


def pod_labels(objects: list[Obj], kind: str, name: str, *keys: str) -> dict[str, str]:
    labels = _find(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
    return {f"app.kubernetes.io/{k}": labels[f"app.kubernetes.io/{k}"] for k in keys}


def test_correlator_upstreams_are_the_services(full: list[Obj]) -> None:
    env = _env(_pod(_find(full, "Deployment", "correlator"))["containers"][0])
    for variable, upstream in UPSTREAMS["correlator"].items():
        assert env[variable] == f"{upstream}:{DEFAULT_PORTS[upstream]}"


@pytest.mark.parametrize("component", [*SERVICES, "agent"])
def test_component_mounts_its_own_tls_secret(component: str, full: list[Obj]) -> None:
    kind = "DaemonSet" if component == "agent" else "Deployment"
    pod = _pod(_find(full, kind, component))
    container = pod["containers"][0]
    assert _env(container)["PARALLAX_TLS_DIR"] == "/etc/parallax/tls"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/parallax/tls"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == f"parallax-{component}-tls"
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}


def test_every_container_has_requests_limits_and_probes(full: list[Obj]) -> None:
    for workload in _workloads(full):
        for container in _pod(workload)["containers"]:
            resources = container["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[part]), workload["metadata"]["name"]
            assert "livenessProbe" in container and "readinessProbe" in container
            assert not container["image"].endswith(":latest") and ":" in container["image"]


def test_runtime_scales_out_on_postgresql(full: list[Obj]) -> None:
    runtime = _find(full, "Deployment", "runtime")
    assert runtime["spec"]["replicas"] >= 2
    url = _env(_pod(runtime)["containers"][0])["DATABASE_URL"]["secretKeyRef"]
    assert url == {"name": "parallax-database", "key": "runtime"}  # required, not optional
    budget = _find(full, "PodDisruptionBudget", "runtime")
    assert budget["spec"]["minAvailable"] < runtime["spec"]["replicas"]
    secret = _find(full, "Secret", "parallax-database")
    assert set(secret["data"]) == {*SERVICES, "password"}


def test_only_the_api_readers_mount_a_token(full: list[Obj]) -> None:
    mounted = {
        w["metadata"]["name"] for w in _workloads(full) if _pod(w)["automountServiceAccountToken"]
    }
    assert mounted == {"posture", "policygen", "agent"}
    for account in (o for o in full if o["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower == "endpoints":  # already plural
        return lower
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


def _grants(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_posture_reads_exactly_the_kinds_it_lists(full: list[Obj]) -> None:
    expected = {
        (k.api_version.rpartition("/")[0], _plural(k.kind), verb)
        for k in KINDS
        for verb in ("get", "list", "watch")
    }
    assert _grants(_find(full, "ClusterRole", "parallax-posture-reader")) == expected
    assert not any(r == "secrets" for _, r, _ in expected)


def test_policygen_reads_exactly_the_kinds_it_lists(full: list[Obj]) -> None:
    expected = {
        (k.api_version.rpartition("/")[0], _plural(k.kind), verb)
        for k in cluster_source.KINDS
        for verb in ("get", "list")
    }
    assert ("", "endpoints", "list") in expected and ("apps", "deployments", "get") in expected
    assert _grants(_find(full, "ClusterRole", "parallax-policygen-reader")) == expected
    assert not any(r in ("secrets", "configmaps") for _, r, _ in expected)
    env = _env(_pod(_find(full, "Deployment", "policygen"))["containers"][0])
    assert env["PARALLAX_IN_CLUSTER"] == "true"


def test_agent_reads_pods_and_owners_only(full: list[Obj]) -> None:
    assert _grants(_find(full, "ClusterRole", "parallax-agent")) == {
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch"),
        ("apps", "replicasets", "get"), ("batch", "jobs", "get"),
    }  # fmt: skip


def test_every_binding_names_a_role_in_the_build(full: list[Obj]) -> None:
    roles = {o["metadata"]["name"] for o in full if o["kind"] == "ClusterRole"}
    accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in full
                if o["kind"] == "ServiceAccount"}  # fmt: skip
    for binding in (o for o in full if o["kind"] == "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] in roles
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts


def test_agent_has_only_its_capabilities_and_read_only_host_mounts(full: list[Obj]) -> None:
    agent = _find(full, "DaemonSet", "agent")
    assert agent["metadata"]["namespace"] == "parallax-agent"
    pod = _pod(agent)
    for flag in ("hostPID", "hostIPC", "hostNetwork"):
        assert not pod.get(flag)
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) == AGENT_CAPABILITIES
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host.values()) == AGENT_HOST_PATHS
    for mount in container["volumeMounts"]:
        if mount["name"] in host:
            assert mount["readOnly"] is True, mount
    assert _env(container)["PARALLAX_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
