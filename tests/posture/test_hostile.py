"""Hostile input never crashes a scan: bad YAML, bombs, huge or binary files, wrong types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.posture import loader
from services.posture.loader import from_objects, load_paths, load_text
from services.posture.rules import evaluate

GOOD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ok\nspec:\n  hostPID: true\n"


def test_invalid_yaml_names_document_and_the_rest_completes() -> None:
    text = GOOD + "---\nkind: [unclosed\n---\n" + GOOD.replace("ok", "ok2")
    manifests, errors = load_text(text, "bad.yaml")
    assert [m.name for m in manifests] == ["ok", "ok2"]
    (error,) = errors
    assert (error.location.uri, error.location.document, error.location.line) == ("bad.yaml", 1, 8)
    assert "invalid YAML" in error.message


def test_yaml_value_tag_is_a_string() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eq\ndata:\n  op: =\n"
    manifests, errors = load_text(text, "eq.yaml")
    assert not errors and manifests[0].body["data"]["op"] == "="


def test_billion_laughs_is_refused() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n" + "\n".join(lines) + "\n"
    manifests, errors = load_text(bomb + "---\n" + GOOD, "bomb.yaml")
    assert [m.name for m in manifests] == ["ok"]
    assert "alias" in errors[0].message


def test_oversized_document_and_file(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(loader, "MAX_DOCUMENT_BYTES", 200)
    big = GOOD + "  extra: '" + "x" * 300 + "'\n"
    manifests, errors = load_text(big + "---\n" + GOOD, "big.yaml")
    assert len(manifests) == 1 and "larger than" in errors[0].message
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 100)
    (tmp_path / "huge.yaml").write_text(big)
    manifests, errors = load_paths([str(tmp_path)])
    assert not manifests and "file larger than" in errors[0].message


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"\x7fELF\x00\x00\x01binary")
    (tmp_path / "b.yml").write_bytes(b"kind: \xff\xfe\xfa")
    (tmp_path / "c.json").write_text(
        '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"}}'
    )
    (tmp_path / "ignored.txt").write_text("not scanned")
    manifests, errors = load_paths([str(tmp_path), str(tmp_path / "missing.yaml")])
    assert [m.name for m in manifests] == ["j"]
    assert len(errors) == 3
    assert all(e.location.uri.startswith(str(tmp_path)) for e in errors)


def test_non_objects_and_unknown_kinds() -> None:
    text = "- a\n- b\n---\njust a string\n---\nfoo: bar\n---\napiVersion: x/v1\nkind: Widget\n"
    manifests, errors = load_text(text, "odd.yaml")
    assert len(errors) == 3 and [m.kind for m in manifests] == ["Widget"]
    report = evaluate(manifests)
    assert report.objects_ignored == 1 and not report.findings


def test_list_kinds_expand_with_inferred_kinds() -> None:
    objects = [{"apiVersion": "v1", "kind": "PodList", "items": [{"metadata": {"name": "p"}}, 3]}]
    manifests, errors = from_objects(objects, "cluster://test")
    assert [(m.kind, m.name) for m in manifests] == [("Pod", "p")] and not errors


def test_wrong_types_everywhere() -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": 3, "annotations": ["x"], "labels": "y"},
        "spec": {
            "template": {
                "spec": {
                    "containers": ["str", {"securityContext": "x", "env": {}}],
                    "volumes": "nope",
                    "securityContext": [],
                }
            }
        },
    }
    manifests, _ = from_objects([body], "test://types")
    report = evaluate(manifests)
    assert not report.errors


nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "spec",
                    "template",
                    "containers",
                    "securityContext",
                    "capabilities",
                    "add",
                    "drop",
                    "volumes",
                    "hostPath",
                    "path",
                    "env",
                    "name",
                    "value",
                    "rules",
                    "subjects",
                    "verbs",
                    "resources",
                    "apiGroups",
                    "podSelector",
                    "matchLabels",
                    "matchExpressions",
                    "metadata",
                    "labels",
                    "annotations",
                    "ports",
                    "image",
                    "jobTemplate",
                    "selector",
                    "initContainers",
                    "volumeMounts",
                    "roleRef",
                    "kind",
                    "policyTypes",
                    "ingress",
                    "sysctls",
                    "seccompProfile",
                    "type",
                    "runAsUser",
                    "data",
                    "tls",
                    "items",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
KINDS = ["Pod", "Deployment", "CronJob", "PodTemplate", "Role", "ClusterRole", "RoleBinding",
         "ClusterRoleBinding", "NetworkPolicy", "Service", "Ingress", "Namespace", "ConfigMap",
         "ServiceAccount", "CiliumNetworkPolicy"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KINDS), nested), min_size=1, max_size=4))
def test_arbitrary_structures_never_raise(objects: list[tuple[str, Any]]) -> None:
    bodies = []
    for kind, body in objects:
        base = body if isinstance(body, dict) else {"spec": body}
        bodies.append({**base, "apiVersion": "v1", "kind": kind})
    manifests, _ = from_objects(bodies, "test://fuzz")
    report = evaluate(manifests)
    assert not [e for e in report.errors if "internal error" in e.message]
