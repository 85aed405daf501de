"""Compile the runtime service's hot modules with mypyc (shipped with mypy) into C extensions
next to their sources: the ingest path (records, steps, payloads) and the engine (profiles,
learning, rules, containers, alerts) run about twice as fast (bench/runtime_ingest.py).

    .venv/bin/python scripts/native.py           # build (make native)
    .venv/bin/python scripts/native.py --clean   # remove, back to pure Python

The same sources run as pure Python when nothing is built (or the build fails: a compiler
missing is not an error). A built module older than its source is refused at import
(services/runtime/__init__.py), so an edit is never shadowed by stale code; `make test`
rebuilds first."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "services" / "runtime"
MODULES = [
    "domain",
    "payloads",
    "records",
    "steps",
    "patterns",
    "profiles",
    "learning",
    "containers",
    "engine",
    "alerts",
    "nodes",
    "signatures",
    "rules/checks",
]
# Modules that import the generated protobuf code, which has no type information for mypyc.
MYPY_CONFIG = """[mypy]
ignore_missing_imports = True
follow_imports = silent
"""


def built() -> list[Path]:
    """The extension modules (and mypyc's shared runtime) a build leaves in the tree."""
    found = [p for p in PACKAGE.rglob("*.so")]
    return found + list(ROOT.glob("*__mypyc*.so"))


def clean() -> None:
    """Remove every built extension and the build directory."""
    for path in built():
        path.unlink()
    shutil.rmtree(ROOT / "build" / "native", ignore_errors=True)


def build() -> None:
    """Compile MODULES in place (setuptools' build_ext --inplace, run from the repository root
    so the extensions land beside their sources)."""
    from mypyc.build import mypycify
    from setuptools import setup

    clean()
    sources = [str(PACKAGE / f"{m}.py") for m in MODULES]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(MYPY_CONFIG)
        os.chdir(ROOT)
        extensions = mypycify(
            ["--config-file", str(config), *sources], opt_level="3", target_dir="build/native"
        )
        setup(
            name="parallax-native",
            ext_modules=extensions,
            py_modules=[],
            packages=[],
            script_args=["build_ext", "--inplace", "--build-temp", "build/native/temp", "-q"],
        )
    print(f"native: built {len(built())} extension modules from {len(MODULES)} sources")


def main() -> int:
    if "--clean" in sys.argv[1:]:
        clean()
        return 0
    try:
        build()
    except (Exception, SystemExit) as exc:  # no compiler, no headers: stay pure Python
        clean()
        print(f"native: not built ({exc}); the runtime runs as pure Python", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
