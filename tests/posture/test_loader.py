"""Loading real manifests: the corpus end to end, document lines, stdin, JSON and List kinds."""

from __future__ import annotations

import io
import sys
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.posture.loader import load_paths, load_text
from services.posture.rules import evaluate
from tests.corpus import CORPUS

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


def test_lines_and_document_indexes() -> None:
    text = (
        "# header\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
        "---\n---\n# c\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n"
    )
    manifests, errors = load_text(text, "multi.yaml")
    assert not errors
    assert [(m.name, m.location.document, m.location.line) for m in manifests] == [
        ("a", 0, 3),
        ("b", 1, 9),
    ]


POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\n"


@pytest.mark.parametrize(
    ("text", "documents"),
    [
        ("---\n" + POD % "a", [("a", 0, 2)]),
        (POD % "a" + "--- # next\n" + POD % "b", [("a", 0, 1), ("b", 1, 5)]),
        (POD % "a" + "...\n---\n" + POD % "b", [("a", 0, 1), ("b", 1, 6)]),
        (POD % "a" + "---\r\n" + POD % "b", [("a", 0, 1), ("b", 1, 5)]),
        ("metadata: {name: a}\nkind: Pod\napiVersion: v1\n---", [("a", 0, 1)]),
        (POD % "a" + "---x: 1\n", [("a", 0, 1)]),
    ],
    ids=["leading", "comment", "end-marker", "crlf", "trailing", "not-a-marker"],
)
def test_document_markers(text: str, documents: list[tuple[str, int, int]]) -> None:
    manifests, errors = load_text(text, "markers.yaml")
    assert not errors
    assert [(m.name, m.location.document, m.location.line) for m in manifests] == documents


def test_json_file_and_list() -> None:
    pod = '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "n"}}'
    text = '{"apiVersion": "v1", "kind": "List", "items": [' + pod + "]}"
    manifests, errors = load_text(text.encode(), "list.json")
    assert not errors and [(m.kind, m.namespace, m.name) for m in manifests] == [("Pod", "n", "x")]


def test_stdin(monkeypatch: Any) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: s}\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    manifests, errors = load_paths(["-"])
    assert not errors and manifests[0].location.uri == "-" and manifests[0].name == "s"


@needs_corpus
def test_corpus_scans_without_errors() -> None:
    # Speed is measured by bench/posture_vs_checkov.py, not asserted here.
    manifests, errors = load_paths([str(CORPUS)])
    report = evaluate(manifests)
    assert not errors and not report.errors
    assert len(manifests) >= 797  # FILES.tsv counts 797 objects; List items add more
    by_control = Counter(f.control_id for f in report.findings)
    assert by_control["CTR-01"] >= 48 and by_control["POD-01"] >= 32 and by_control["RBAC-03"]


@needs_corpus
def test_corpus_bad_pods_are_flagged() -> None:
    manifests, _ = load_paths([str(CORPUS / "badPods" / "manifests" / "priv")])
    report = evaluate(manifests)
    privileged = [f for f in report.findings if f.control_id == "CTR-01"]
    assert len(privileged) == len([m for m in manifests if m.kind != "Service"])
    assert all(f.field_path.endswith("securityContext.privileged") for f in privileged)
    assert all(f.object.location.line >= 1 for f in privileged)


@needs_corpus
def test_corpus_value_tag_crd_loads() -> None:
    path = (
        CORPUS / "kube-prometheus/manifests/setup/0alertmanagerConfigCustomResourceDefinition.yaml"
    )
    manifests, errors = load_paths([str(path)])
    assert not errors and manifests[0].kind == "CustomResourceDefinition"


def _both_constructions(text: str) -> tuple[object, object]:
    from services.posture import loader

    fast, reference = loader._Loader(text), loader._Loader(text)
    try:
        node = fast.get_single_node()
        reference_node = reference.get_single_node()
        return loader._construct(fast, node), reference.construct_document(reference_node)
    finally:
        fast.dispose()
        reference.dispose()


@needs_corpus
def test_fast_construction_matches_pyyaml_on_the_corpus() -> None:
    from services.posture import loader

    compared = 0
    for uri, data in loader.read_sources([str(CORPUS)])[0]:
        for chunk in loader._split_documents(data.decode("utf-8", "replace")):
            if len(chunk.text) < loader.HEADER_ONLY_MIN_BYTES and chunk.text.strip():
                try:
                    fast, reference = _both_constructions(chunk.text)
                except yaml.YAMLError:
                    continue
                assert fast == reference, uri
                compared += 1
    assert compared > 700


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.sampled_from(["yes", "off", "0x1F", "1e3", "2024-01-01", "~", "="]),
)
_trees = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_trees)
def test_fast_construction_matches_pyyaml_on_any_tree(tree: object) -> None:
    fast, reference = _both_constructions(yaml.safe_dump({"spec": tree}))
    assert fast == reference


def test_unusual_nodes_fall_back_to_pyyaml() -> None:
    merged = "base: &b {a: 1}\nspec:\n  <<: *b\n  c: !!binary aGk=\n"
    fast, reference = _both_constructions(merged)
    assert fast == reference == {"base": {"a": 1}, "spec": {"a": 1, "c": b"hi"}}


@pytest.mark.parametrize(
    "text",
    [
        "spec: !!set {a: null, b: null}\n",
        "spec: !!omap [{a: 1}, {b: 2}]\n",
        "spec: !!pairs [{a: 1}, {a: 2}]\n",
    ],
)
def test_tagged_collections_get_pyyaml_meaning(text: str) -> None:
    fast, reference = _both_constructions(text)
    assert fast == reference


def test_unknown_tag_on_a_collection_is_a_scan_error() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: !custom {name: x}\n---\n" + POD % "b"
    manifests, errors = load_text(text, "tagged.yaml")
    assert [m.name for m in manifests] == ["b"]  # the rest of the file still loads
    (error,) = errors
    assert error.location.uri == "tagged.yaml" and error.location.document == 0
    assert "!custom" in error.message
