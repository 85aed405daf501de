"""Every manifest under deploy/ parses, every build renders, and the rendered objects are valid
Kubernetes 1.30 objects by the OpenAPI schemas (kubernetes-validate, offline, strict: unknown
fields fail). Where kubectl is installed, its kustomize renders the same objects."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import BUILDS, DEPLOY
from tests.deploy.kustomize import (
    KUSTOMIZATION,
    Obj,
    PatchTestFailed,
    Unsupported,
    load_documents,
    render,
)

KUBERNETES_VERSION = "1.30"
CERT_MANAGER_GROUP = "cert-manager.io/"


def _key(obj: Obj) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return obj["kind"], metadata.get("namespace") or "", metadata["name"]


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} is empty"
    if path.name != KUSTOMIZATION:
        for doc in documents:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: {doc}"


def test_every_kustomization_is_rendered_or_reached() -> None:
    directories = {p.parent for p in DEPLOY.rglob(KUSTOMIZATION)}
    reached: set[Path] = set()

    def walk(directory: Path) -> None:
        reached.add(directory)
        spec = load_documents(directory / KUSTOMIZATION)[0]
        for entry in (*spec.get("resources", []), *spec.get("components", [])):
            if (directory / entry).is_dir():
                walk((directory / entry).resolve())

    for build in BUILDS:
        walk(DEPLOY / build)
    assert directories == reached


def test_the_full_build_holds_every_component(builds: dict[str, list[Obj]]) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in builds["overlays/dev"]}
    for workload in ("posture", "runtime", "policygen", "correlator", "otel-collector"):
        assert ("Deployment", workload) in kinds
    assert ("DaemonSet", "agent") in kinds
    assert ("StatefulSet", "postgres") in kinds
    assert sum(kind == "NetworkPolicy" for kind, _ in kinds) >= 10
    base = {_key(o) for o in builds["base"]}
    assert base < {_key(o) for o in builds["overlays/dev"]}


@pytest.mark.parametrize("build", BUILDS)
def test_object_names_are_unique(build: str, builds: dict[str, list[Obj]]) -> None:
    keys = [_key(o) for o in builds[build]]
    assert len(keys) == len(set(keys))


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / KUSTOMIZATION).write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(Unsupported, match="namePrefix"):
        render(tmp_path)


def test_a_failed_patch_test_stops_the_render(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    patch = "[{op: test, path: /metadata/name, value: b}, {op: replace, path: /data, value: {}}]"
    (tmp_path / KUSTOMIZATION).write_text(
        f"resources: [cm.yaml]\npatches:\n  - target: {{kind: ConfigMap}}\n    patch: '{patch}'\n"
    )
    with pytest.raises(PatchTestFailed, match="/metadata/name"):
        render(tmp_path)


@pytest.mark.parametrize("build", BUILDS)
def test_rendered_objects_match_the_kubernetes_schemas(
    build: str, builds: dict[str, list[Obj]]
) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    for obj in builds[build]:
        if obj["apiVersion"].startswith(CERT_MANAGER_GROUP):
            continue  # no CRD schemas offline: test_cert_manager.py checks their structure
        try:
            validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{_key(obj)} at {where}: {exc.message}")


def test_the_schema_check_catches_a_mistake(full: list[Obj]) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    broken = json.loads(json.dumps(next(o for o in full if o["kind"] == "DaemonSet")))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(validate.ValidationError):
        validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _normalised(obj: Obj) -> str:
    if obj["kind"] == "Secret":  # kubectl wraps base64 at 76 columns
        obj = {**obj, "data": {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}}
    return json.dumps(obj, sort_keys=True)


@pytest.mark.parametrize("build", BUILDS)
def test_kubectl_kustomize_renders_the_same_objects(
    build: str, builds: dict[str, list[Obj]]
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the offline renderer alone is checked")
    output = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / build)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    theirs = {_key(o): _normalised(o) for o in yaml.safe_load_all(output) if o}
    ours = {_key(o): _normalised(o) for o in builds[build]}
    assert ours == theirs
