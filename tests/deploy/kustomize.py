"""A minimal offline kustomize for the tests: renders a kustomization directory from its
`resources` and `components` (recursively), secret and ConfigMap generators, `labels`, JSON 6902
`patches` (add, replace, test) with targets, and `images`. It refuses any field it does not
implement, so a kustomization that grows beyond it fails here instead of rendering differently
than kustomize."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
KUSTOMIZATION = "kustomization.yaml"
_KNOWN = {
    "apiVersion", "kind", "resources", "components", "labels", "patches", "images",
    "secretGenerator", "configMapGenerator", "generatorOptions",
}  # fmt: skip


class Unsupported(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def load_documents(path: Path) -> list[Obj]:
    """The non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Obj]:
    """Render the kustomization in `directory` into its list of objects."""
    return _build(directory.resolve(), [])


def _build(directory: Path, inherited: list[Obj]) -> list[Obj]:
    spec = load_documents(directory / KUSTOMIZATION)[0]
    unknown = set(spec) - _KNOWN
    if unknown:
        raise Unsupported(f"{directory}: {sorted(unknown)}")
    objects = list(inherited)
    for entry in spec.get("resources", []):
        target = directory / entry
        objects += _build(target, []) if target.is_dir() else load_documents(target)
    objects += _generate(directory, spec)
    for entry in spec.get("components", []):
        objects = _build(directory / entry, objects)
    for label in spec.get("labels", []):
        _label(objects, label)
    for patch in spec.get("patches", []):
        _patch(directory, objects, patch)
    for image in spec.get("images", []):
        _image(objects, image)
    return objects


def _generate(directory: Path, spec: Obj) -> Iterator[Obj]:
    options = spec.get("generatorOptions", {})
    if set(options) - {"disableNameSuffixHash"} or not options.get("disableNameSuffixHash", True):
        raise Unsupported(f"{directory}: generatorOptions {options} (name hashes)")
    if (spec.get("secretGenerator") or spec.get("configMapGenerator")) and not options:
        raise Unsupported(f"{directory}: generators need disableNameSuffixHash: true")
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for generator in spec.get(key, []):
            if set(generator) - {"name", "namespace", "literals", "files"}:
                raise Unsupported(f"{directory}: {key} fields {sorted(generator)}")
            data: dict[str, str] = {}
            for literal in generator.get("literals", []):
                name, _, value = literal.partition("=")
                data[name] = value
            for file in generator.get("files", []):
                data[Path(file).name] = (directory / file).read_text()
            metadata = {"name": generator["name"], "namespace": generator.get("namespace")}
            if kind == "Secret":
                encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
                yield {"apiVersion": "v1", "kind": kind, "metadata": metadata, "type": "Opaque",
                       "data": encoded}  # fmt: skip
            else:
                yield {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}


def _label(objects: list[Obj], label: Obj) -> None:
    if label.get("includeSelectors", False) or label.get("includeTemplates", False):
        raise Unsupported("labels with includeSelectors or includeTemplates")
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])


def _selected(obj: Obj, target: Obj) -> bool:
    if set(target) - {"kind", "name", "labelSelector"}:
        raise Unsupported(f"patch target {target}")
    metadata = obj.get("metadata", {})
    if "kind" in target and obj.get("kind") != target["kind"]:
        return False
    if "name" in target and metadata.get("name") != target["name"]:
        return False
    selector = target.get("labelSelector")
    return selector is None or _labels_match(metadata.get("labels", {}), selector)


def _labels_match(labels: dict[str, str], selector: str) -> bool:
    for term in re.split(r",(?![^(]*\))", selector):
        found = re.fullmatch(r"\s*([\w./-]+)\s+in\s+\(([^)]*)\)\s*", term)
        if found:
            values = {v.strip() for v in found.group(2).split(",")}
            if labels.get(found.group(1)) not in values:
                return False
            continue
        key, equals, value = term.partition("=")
        if not equals:
            raise Unsupported(f"label selector term {term!r}")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _patch(directory: Path, objects: list[Obj], patch: Obj) -> None:
    if set(patch) - {"target", "patch", "path"}:
        raise Unsupported(f"patch fields {sorted(patch)}")
    text = patch.get("patch") or (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise Unsupported("strategic-merge patches (only JSON 6902 operation lists)")
    matched = [obj for obj in objects if _selected(obj, patch["target"])]
    if not matched:
        raise Unsupported(f"patch target {patch['target']} selects nothing")
    for obj in matched:
        for operation in operations:
            _apply(obj, operation)


class PatchTestFailed(ValueError):
    """A JSON patch `test` operation found another value: the patch would not apply."""


def _apply(obj: Obj, operation: Obj) -> None:
    if operation["op"] not in ("add", "replace", "test"):
        raise Unsupported(f"JSON patch op {operation['op']}")
    *parents, last = [
        p.replace("~1", "/").replace("~0", "~") for p in operation["path"][1:].split("/")
    ]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    value = copy.deepcopy(operation["value"])
    if operation["op"] == "test":
        found = node[int(last)] if isinstance(node, list) else node.get(last)
        if found != value:
            raise PatchTestFailed(f"{operation['path']} is {found!r}, not {value!r}")
        return
    if isinstance(node, list):
        if last == "-":
            node.append(value)
        elif operation["op"] == "add":
            node.insert(int(last), value)
        else:
            node[int(last)] = value
    else:
        node[last] = value


def _image(objects: list[Obj], image: Obj) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise Unsupported(f"images fields {sorted(image)}")
    for obj in objects:
        for container in _containers(obj):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                name = image.get("newName", name)
                container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name


def _containers(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])
