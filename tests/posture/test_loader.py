"""Loading real manifests: the corpus end to end, document lines, stdin, JSON and List kinds."""

from __future__ import annotations

import io
import sys
import time
from collections import Counter
from typing import Any

import pytest

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
def test_corpus_scans_fast_without_errors() -> None:
    started = time.perf_counter()
    manifests, errors = load_paths([str(CORPUS)])
    report = evaluate(manifests)
    elapsed = time.perf_counter() - started
    assert not errors and not report.errors
    assert len(manifests) >= 797  # FILES.tsv counts 797 objects; List items add more
    assert elapsed < 5  # about 0.4 s on the 2-core CI box; generous for slow runners
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
