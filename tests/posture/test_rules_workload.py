"""Table-driven tests of every workload control: one failing and one passing scenario each."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.posture.domain import Manifest, SourceLocation
from services.posture.loader import from_objects
from services.posture.rules import RuleSettings, evaluate

DIGEST = "@sha256:" + "a" * 64
CONTAINER: dict[str, Any] = {
    "name": "app",
    "image": "registry.example.com/shop/app:1.0" + DIGEST,
    "imagePullPolicy": "Always",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    },
    "resources": {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},
    },
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
}
POD_SPEC: dict[str, Any] = {
    "serviceAccountName": "app",
    "automountServiceAccountToken": False,
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
        "appArmorProfile": {"type": "RuntimeDefault"},
    },
}
LABELS = {"app": "shop"}
DEFAULT_SETTINGS = RuleSettings()


def merge(base: Any, overlay: Any) -> Any:
    """Deep-merge `overlay` into a copy of `base`; a None value deletes the key."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def pod_spec(
    pod: Mapping[str, Any] | None = None, container: Mapping[str, Any] | None = None
) -> Any:
    spec = merge(POD_SPEC, dict(pod or {}))
    spec["containers"] = [merge(CONTAINER, dict(container or {}))]
    return spec


def deployment(
    pod: Mapping[str, Any] | None = None,
    container: Mapping[str, Any] | None = None,
    name: str = "app",
    namespace: str = "shop",
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": LABELS},
            "template": {"metadata": {"labels": LABELS}, "spec": pod_spec(pod, container)},
        },
    }


def workload(kind: str, spec: Any, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"namespace": "shop", **metadata},
        "spec": spec,
    }


def policy(types: list[str], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]
            },
            "policyTypes": types,
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]}],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"role": "db"}}}]}],
        },
    }


def account(name: str = "app", namespace: str = "shop", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
        **extra,
    }


def binding(
    kind: str, role_kind: str, role: str, subjects: list[dict[str, Any]], namespace: str = "shop"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "grant"}
    if kind == "RoleBinding":
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    }


def role(
    kind: str, rules: list[dict[str, Any]], name: str = "r", namespace: str = "shop"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if kind == "Role":
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "rules": rules,
    }


SA_SUBJECT = {"kind": "ServiceAccount", "name": "app", "namespace": "shop"}
BASELINE: list[dict[str, Any]] = [
    policy(["Ingress", "Egress"]),
    account(automountServiceAccountToken=False),
]


@dataclass(frozen=True)
class Case:
    control: str
    failing: list[dict[str, Any]]
    passing: list[dict[str, Any]] = field(default_factory=lambda: [deployment()])
    settings: RuleSettings = DEFAULT_SETTINGS


def host_volume(path: str, read_only: bool = True) -> dict[str, Any]:
    return {
        "pod": {"volumes": [{"name": "host", "hostPath": {"path": path}}]},
        "container": {
            "volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": read_only}]
        },
    }


def automounting(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [deployment(pod={"automountServiceAccountToken": True}), *extra]


SEC = "securityContext"
WORKLOAD_CASES = [
    Case("CTR-01", [deployment(container={SEC: {"privileged": True}})]),
    Case("CTR-02", [deployment(container={SEC: {"allowPrivilegeEscalation": None}})]),
    Case("CTR-03", [deployment(container={SEC: {"readOnlyRootFilesystem": False}})]),
    Case(
        "CTR-04",
        [deployment(pod={SEC: {"runAsNonRoot": None, "runAsUser": None}})],
        [deployment(pod={SEC: {"runAsNonRoot": None}})],
    ),
    Case("CTR-05", [deployment(container={SEC: {"runAsUser": 1000}})]),
    Case("CTR-06", [deployment(container={SEC: {"capabilities": {"add": ["cap_net_admin"]}}})]),
    Case("CTR-07", [deployment(container={SEC: {"capabilities": {"drop": ["NET_RAW"]}}})]),
    Case(
        "CTR-08",
        [deployment(container={SEC: {"capabilities": {"drop": ["CHOWN"]}}})],
        [deployment(container={SEC: {"capabilities": {"drop": ["NET_RAW"]}}})],
    ),
    Case("CTR-09", [deployment(container={SEC: None})]),
    Case(
        "CTR-10",
        [deployment(pod={SEC: {"seccompProfile": None}})],
        [
            deployment(
                pod={SEC: {"seccompProfile": None}},
                container={SEC: {"seccompProfile": {"type": "RuntimeDefault"}}},
            )
        ],
    ),
    Case("CTR-11", [deployment(pod={SEC: {"appArmorProfile": {"type": "Unconfined"}}})]),
    Case("CTR-12", [deployment(container={SEC: {"procMount": "Unmasked"}})]),
    Case(
        "CTR-13",
        [deployment(pod={SEC: {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}})],
        [deployment(pod={SEC: {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}})],
    ),
    Case("CTR-14", [deployment(container={SEC: {"windowsOptions": {"hostProcess": True}}})]),
    Case("CTR-15", [deployment(pod={SEC: {"runAsGroup": 0}})]),
    Case("CTR-16", [deployment(container={"command": ["sudo", "/app"]})]),
    Case("POD-01", [deployment(pod={"hostPID": True})]),
    Case("POD-02", [deployment(pod={"hostIPC": True})]),
    Case("POD-03", [deployment(pod={"hostNetwork": True})]),
    Case(
        "POD-04",
        [deployment(container={"ports": [{"containerPort": 80, "hostPort": 80}]})],
        [deployment(container={"ports": [{"containerPort": 80}]})],
    ),
    Case("POD-05", [deployment(**host_volume("/var/log"))]),
    Case(
        "POD-06",
        [deployment(**host_volume("/etc", read_only=False))],
        [deployment(**host_volume("/etc"))],
    ),
    Case(
        "POD-07",
        [deployment(**host_volume("/var/run/docker.sock"))],
        [deployment(**host_volume("/var/log"))],
    ),
    Case(
        "POD-08",
        [deployment(**host_volume("/root/.aws/credentials"))],
        [deployment(**host_volume("/var/log"))],
    ),
    Case(
        "POD-09",
        [workload("Pod", pod_spec(), name="bare", labels=LABELS)],
        [
            workload(
                "Pod",
                pod_spec(),
                name="owned",
                labels=LABELS,
                ownerReferences=[{"kind": "ReplicaSet", "name": "x"}],
            )
        ],
    ),
    Case("POD-10", [deployment(namespace="default"), policy(["Ingress", "Egress"], "default")]),
    Case("SA-01", automounting(), [deployment(pod={"automountServiceAccountToken": None})]),
    Case(
        "SA-02",
        automounting(
            binding("RoleBinding", "Role", "r", [SA_SUBJECT]),
            role("Role", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        ),
        automounting(),
    ),
    Case("SA-03", [account("default")], [account("default", automountServiceAccountToken=False)]),
    Case(
        "SA-04",
        automounting(binding("ClusterRoleBinding", "ClusterRole", "cluster-admin", [SA_SUBJECT])),
        automounting(binding("ClusterRoleBinding", "ClusterRole", "view", [SA_SUBJECT])),
    ),
    Case(
        "SA-05",
        automounting(binding("ClusterRoleBinding", "ClusterRole", "edit", [SA_SUBJECT])),
        automounting(binding("ClusterRoleBinding", "ClusterRole", "view", [SA_SUBJECT])),
    ),
    Case("SA-06", [deployment(pod={"serviceAccount": "app"})]),
    Case(
        "SEC-01",
        [deployment(container={"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]})],
        [deployment(container={"env": [{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db"}]})],
    ),
    Case(
        "SEC-02",
        [
            deployment(
                container={
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
                }
            )
        ],
    ),
    Case(
        "SEC-03",
        [
            deployment(
                pod={"volumes": [{"name": "s", "secret": {"secretName": "s"}}]},
                container={"volumeMounts": [{"name": "s", "mountPath": "/s"}]},
            )
        ],
        [deployment(pod={"volumes": [{"name": "s", "secret": {"secretName": "s"}}]})],
    ),
    Case(
        "SEC-04",
        [
            deployment(
                pod={"volumes": [{"name": "c", "configMap": {"name": "c"}}]},
                container={"volumeMounts": [{"name": "c", "mountPath": "/c"}]},
            )
        ],
    ),
    Case(
        "IMG-01",
        [deployment(container={"image": "nginx:latest"})],
        [deployment(container={"image": "nginx:1.25"})],
    ),
    Case("IMG-02", [deployment(container={"image": "nginx:1.25"})]),
    Case(
        "IMG-03",
        [deployment(container={"image": "nginx:1.25", "imagePullPolicy": "IfNotPresent"})],
        [deployment(container={"image": "nginx:1.25", "imagePullPolicy": "Always"})],
    ),
    Case(
        "IMG-04",
        [deployment(container={"image": "docker.io/library/nginx:1.25"})],
        settings=RuleSettings(allowed_registries=("registry.example.com",)),
    ),
    Case("IMG-05", [deployment(container={"image": "k8s.gcr.io/pause:3.9"})]),
    Case("RES-01", [deployment(container={"resources": {"limits": {"cpu": None}}})]),
    Case("RES-02", [deployment(container={"resources": {"limits": {"memory": None}}})]),
    Case("RES-03", [deployment(container={"resources": {"requests": None, "limits": None}})]),
    Case("REL-01", [deployment(container={"livenessProbe": None})]),
    Case("REL-02", [deployment(container={"readinessProbe": None})]),
    Case("MISC-01", [deployment(container={"image": "kubernetesui/dashboard:v2.7.0"})]),
    Case("MISC-02", [deployment(container={"env": [{"name": "GITSYNC_GIT", "value": "/tmp/x"}]})]),
    Case(
        "MISC-03",
        [
            workload(
                "CronJob",
                {
                    "schedule": "* * * * *",
                    "jobTemplate": {"spec": {"template": {"spec": pod_spec()}}},
                },
                name="c",
            )
        ],
        [workload("Job", {"template": {"spec": pod_spec()}}, name="j")],
    ),
]


def scan(objects: list[dict[str, Any]], settings: RuleSettings = DEFAULT_SETTINGS) -> list[str]:
    manifests, errors = from_objects([*objects, *BASELINE], "test://case")
    assert not errors
    report = evaluate(manifests, settings=settings)
    assert not report.errors, report.errors
    return [f.control_id for f in report.findings]


def check_case(case: Case) -> None:
    assert case.control in scan(case.failing, case.settings), "failing scenario not flagged"
    assert case.control not in scan(case.passing, case.settings), "passing scenario flagged"


@pytest.mark.parametrize("case", WORKLOAD_CASES, ids=[c.control for c in WORKLOAD_CASES])
def test_workload_control(case: Case) -> None:
    check_case(case)


def manifest(obj: dict[str, Any]) -> Manifest:
    manifests, _ = from_objects([obj], "test://one")
    return manifests[0]


def findings_of(objects: list[dict[str, Any]], control: str) -> list[Any]:
    manifests, _ = from_objects([*objects, *BASELINE], "test://case")
    return [f for f in evaluate(manifests).findings if f.control_id == control]


def test_field_path_is_exact() -> None:
    (finding,) = findings_of([deployment(container={SEC: {"privileged": True}})], "CTR-01")
    assert finding.field_path == "spec.template.spec.containers[0].securityContext.privileged"
    assert finding.patch == (
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/securityContext/privileged",
            "value": False,
        },
    )


def test_pod_level_security_context_is_inherited() -> None:
    inherited = deployment(pod={SEC: {"runAsUser": 0}})
    (finding,) = findings_of([inherited], "CTR-04")
    assert finding.field_path == "spec.template.spec.securityContext.runAsUser"
    overridden = deployment(pod={SEC: {"runAsUser": 0}}, container={SEC: {"runAsUser": 20000}})
    assert not findings_of([overridden], "CTR-04")


def test_init_and_ephemeral_containers_are_judged() -> None:
    obj = deployment()
    spec = obj["spec"]["template"]["spec"]
    spec["initContainers"] = [merge(CONTAINER, {SEC: {"privileged": True}})]
    spec["ephemeralContainers"] = [merge(CONTAINER, {SEC: {"privileged": True}})]
    paths = {f.field_path for f in findings_of([obj], "CTR-01")}
    assert paths == {
        "spec.template.spec.initContainers[0].securityContext.privileged",
        "spec.template.spec.ephemeralContainers[0].securityContext.privileged",
    }


def test_service_account_automount_semantics() -> None:
    unset = deployment(namespace="other", pod={"automountServiceAccountToken": None})
    sa_on = account("app", "other", automountServiceAccountToken=True)
    sa_off = account("app", "other", automountServiceAccountToken=False)
    assert findings_of([unset], "SA-01"), "no ServiceAccount in the scan: Kubernetes default true"
    assert findings_of([unset, sa_on], "SA-01")
    assert not findings_of([unset, sa_off], "SA-01"), "ServiceAccount false applies"
    pod_on = deployment(namespace="other", pod={"automountServiceAccountToken": True})
    assert findings_of([pod_on, sa_off], "SA-01"), "the pod's value wins"


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("ReplicationController", "spec.template.spec"),
        ("PodTemplate", "template.spec"),
        ("CronJob", "spec.jobTemplate.spec.template.spec"),
        ("Pod", "spec"),
    ],
    ids=["ReplicationController", "PodTemplate", "CronJob", "Pod"],
)
def test_pod_spec_locations(kind: str, path: str) -> None:
    spec = pod_spec(pod={"hostPID": True})
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "shop"},
    }
    cursor = body
    keys = path.split(".")
    for key in keys[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[keys[-1]] = spec
    (finding,) = findings_of([body], "POD-01")
    assert finding.field_path == f"{path}.hostPID"


def test_location_and_key_are_stable() -> None:
    obj = manifest(deployment(container={SEC: {"privileged": True}}))
    moved = Manifest(
        SourceLocation(obj.location.uri, 7, 99),
        obj.api_version,
        obj.kind,
        obj.namespace,
        obj.name,
        obj.body,
    )
    first = [f.key for f in evaluate([obj]).findings]
    second = [f.key for f in evaluate([moved]).findings]
    assert first == second


def test_limit_without_request_is_not_a_missing_request() -> None:
    # Kubernetes defaults a missing request to the limit (bench/README.md, the selenium case).
    limits_only = {"resources": {"requests": None, "limits": {"cpu": "1", "memory": "1Gi"}}}
    assert findings_of([deployment(container=limits_only)], "RES-03") == []
    cpu_only = {"resources": {"requests": None, "limits": {"cpu": "1", "memory": None}}}
    (finding,) = findings_of([deployment(container=cpu_only)], "RES-03")
    assert "memory request" in finding.message and "cpu" not in finding.message
