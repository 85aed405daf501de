"""Table-driven tests of the RBAC controls, judged per subject with built-in ClusterRoles."""

from __future__ import annotations

from typing import Any

import pytest

from services.posture.loader import from_objects
from services.posture.rules import evaluate
from tests.posture.test_rules_workload import Case, binding, check_case, role

SUBJECT = {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}


def granting(rule: dict[str, Any], subject: dict[str, Any] = SUBJECT) -> list[dict[str, Any]]:
    return [
        binding("ClusterRoleBinding", "ClusterRole", "r", [subject]),
        role("ClusterRole", [{"apiGroups": ["list"], "resources": ["x"], "verbs": ["get"]}, rule]),
    ]


def rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


HARMLESS = granting(rule([""], ["configmaps"], ["get"]))
RBAC_CASES = [
    Case(
        "RBAC-01",
        [binding("ClusterRoleBinding", "ClusterRole", "cluster-admin", [SUBJECT])],
        [binding("ClusterRoleBinding", "ClusterRole", "view", [SUBJECT])],
    ),
    Case("RBAC-02", [role("ClusterRole", [rule(["apps"], ["*"], ["get"])])], HARMLESS),
    Case("RBAC-03", granting(rule([""], ["secrets"], ["list"])), HARMLESS),
    Case("RBAC-04", granting(rule([""], ["pods"], ["create"])), HARMLESS),
    Case("RBAC-05", granting(rule([""], ["pods/exec"], ["create"])), HARMLESS),
    Case("RBAC-06", granting(rule([""], ["pods/*"], ["create"])), HARMLESS),
    Case("RBAC-07", granting(rule([""], ["serviceaccounts"], ["impersonate"])), HARMLESS),
    Case(
        "RBAC-08",
        granting(rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["escalate"])),
        HARMLESS,
    ),
    Case("RBAC-09", granting(rule(["apps"], ["deployments"], ["delete"])), HARMLESS),
    Case("RBAC-10", granting(rule([""], ["events"], ["deletecollection"])), HARMLESS),
    Case("RBAC-11", granting(rule([""], ["configmaps"], ["patch"])), HARMLESS),
    Case("RBAC-12", granting(rule([""], ["persistentvolumes"], ["create"])), HARMLESS),
    Case("RBAC-13", granting(rule([""], ["nodes/proxy"], ["get"])), HARMLESS),
    Case(
        "RBAC-14",
        granting(
            rule(["certificates.k8s.io"], ["certificatesigningrequests/approval"], ["update"])
        ),
        HARMLESS,
    ),
    Case(
        "RBAC-15",
        granting(
            rule(["admissionregistration.k8s.io"], ["mutatingwebhookconfigurations"], ["patch"])
        ),
        HARMLESS,
    ),
    Case("RBAC-16", granting(rule([""], ["serviceaccounts/token"], ["create"])), HARMLESS),
    Case(
        "RBAC-17",
        [
            binding(
                "ClusterRoleBinding",
                "ClusterRole",
                "view",
                [{"kind": "User", "name": "system:anonymous"}],
            )
        ],
        HARMLESS,
    ),
    Case(
        "RBAC-18",
        granting(rule([""], ["pods"], ["get"]), {"kind": "Group", "name": "system:authenticated"}),
        granting(
            rule([""], ["configmaps"], ["get"]), {"kind": "Group", "name": "system:authenticated"}
        ),
    ),
    Case("RBAC-19", granting(rule([""], ["services/status"], ["patch"])), HARMLESS),
]


@pytest.mark.parametrize("case", RBAC_CASES, ids=[c.control for c in RBAC_CASES])
def test_rbac_control(case: Case) -> None:
    check_case(case)


def findings(objects: list[dict[str, Any]], control: str) -> list[Any]:
    manifests, _ = from_objects(objects, "test://rbac")
    return [f for f in evaluate(manifests).findings if f.control_id == control]


def test_cluster_admin_binding_is_judged_from_manifests_alone() -> None:
    subjects = [SUBJECT, {"kind": "Group", "name": "ops"}]
    found = findings(
        [binding("ClusterRoleBinding", "ClusterRole", "cluster-admin", subjects)], "RBAC-01"
    )
    assert [f.field_path for f in found] == [
        "ClusterRoleBinding/grant subjects[0] -> ClusterRole/cluster-admin rules[0]",
        "ClusterRoleBinding/grant subjects[1] -> ClusterRole/cluster-admin rules[0]",
    ]
    assert found[0].message == "ServiceAccount build/ci can do anything (admin-equivalent)"
    assert found[0].patch == ({"op": "remove", "path": "/subjects/0"},)


def test_bound_role_is_judged_on_the_binding_not_the_role() -> None:
    objects = granting(rule([""], ["secrets"], ["get"]))
    kinds = {f.object.kind for f in findings(objects, "RBAC-03")}
    assert kinds == {"ClusterRoleBinding"}
    unbound = findings(objects[1:], "RBAC-03")
    assert [(f.object.kind, f.field_path) for f in unbound] == [("ClusterRole", "rules[1]")]


def test_role_binding_to_missing_role_is_skipped() -> None:
    assert not findings([binding("RoleBinding", "Role", "absent", [SUBJECT])], "RBAC-03")


def test_aggregated_cluster_role_collects_selected_rules() -> None:
    aggregate = role("ClusterRole", [], name="agg")
    aggregate["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]}
    part = role("ClusterRole", [rule([""], ["secrets"], ["get"])], name="part")
    part["metadata"]["labels"] = {"agg": "true"}
    objects = [aggregate, part, binding("ClusterRoleBinding", "ClusterRole", "agg", [SUBJECT])]
    assert [f.object.kind for f in findings(objects, "RBAC-03")] == ["ClusterRoleBinding"]
