"""The compiled runtime modules (scripts/native.py): a build is complete or absent, and an
extension older than its source is refused at import rather than run as stale code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import services.runtime
from scripts import native
from services.runtime import _refuse_stale_extensions


def test_an_extension_older_than_its_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "steps.py"
    extension = tmp_path / "steps.cpython-311-x86_64-linux-gnu.so"
    extension.write_bytes(b"")
    source.write_text("")
    os.utime(extension, (1_000, 1_000))
    os.utime(source, (2_000, 2_000))
    with pytest.raises(ImportError, match="make native"):
        _refuse_stale_extensions(tmp_path)
    os.utime(extension, (3_000, 3_000))
    _refuse_stale_extensions(tmp_path)  # rebuilt: accepted


def test_a_build_is_complete_or_absent() -> None:
    package = Path(services.runtime.__file__).parent
    built = {p.name.split(".", 1)[0] for p in package.rglob("*.so")}
    expected = {m.rsplit("/", 1)[-1] for m in native.MODULES}
    assert built in (set(), expected)
