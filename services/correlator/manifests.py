"""The manifests behind posture findings, for the policies that need objects (NetworkPolicy,
hardening) and for mount paths. Posture does not serve manifest content, so the correlator reads
the files its findings name, but only below PARALLAX_MANIFEST_ROOT (unset: none are read)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from services.correlator.domain import Finding, Workload

MAX_FILE_BYTES = 4 * 1024 * 1024


class Manifests:
    """Files under `root` by the URI posture recorded (relative URIs resolve against root)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root else None

    def read(self, uris: Iterable[str]) -> dict[str, bytes]:
        """The readable files among `uris`, by URI; others are skipped."""
        found: dict[str, bytes] = {}
        for uri in sorted(set(uris)):
            path = self._path(uri)
            if path is not None:
                found[uri] = path.read_bytes()
        return found

    def _path(self, uri: str) -> Path | None:
        if self.root is None or not uri or uri == "-" or "://" in uri:
            return None
        path = (self.root / uri).resolve()
        inside = path == self.root or self.root in path.parents
        ok = inside and path.is_file() and path.stat().st_size <= MAX_FILE_BYTES
        return path if ok else None


def documents(files: Mapping[str, bytes]) -> dict[tuple[str, int], Mapping[str, Any]]:
    """Parsed objects by (uri, document index among non-empty documents)."""
    found: dict[tuple[str, int], Mapping[str, Any]] = {}
    for uri, content in files.items():
        try:
            docs = [doc for doc in yaml.safe_load_all(content) if doc is not None]
        except yaml.YAMLError:
            continue
        for index, doc in enumerate(docs):
            if isinstance(doc, Mapping):
                found[(uri, index)] = doc
    return found


def workload_manifest(
    findings: Iterable[Finding], docs: Mapping[tuple[str, int], Mapping[str, Any]], w: Workload
) -> Mapping[str, Any] | None:
    """The workload's own manifest, located through a finding on its controller object."""
    for f in findings:
        doc = docs.get((f.uri, f.document))
        meta = doc.get("metadata") if doc else None
        if (
            doc
            and isinstance(meta, Mapping)
            and doc.get("kind") == w.kind
            and meta.get("name") == w.name
        ):
            return doc
    return None
