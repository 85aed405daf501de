"""Compile the runtime service's hot modules with mypyc (shipped with mypy) into C extensions
next to their sources: the ingest path (wire, encoded, records, steps, payloads) and the engine (profiles,
learning, rules, containers, alerts) run about twice as fast (bench/runtime_ingest.py).

    .venv/bin/python scripts/native.py           # build (make native)
    .venv/bin/python scripts/native.py --clean   # remove, back to pure Python
    python scripts/native.py --root SITE --require   # an installed copy (deploy/Dockerfile)

The same sources run as pure Python when nothing is built (or the build fails: a compiler
missing is not an error). A built module older than its source is refused at import
(services/runtime/__init__.py), so an edit is never shadowed by stale code; `make test`
rebuilds first. `--root` names the directory holding `services/` (default: this repository),
and `--require` makes a failed build an error instead of a fallback."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
MODULES = [
    "domain",
    "payloads",
    "records",
    "encoded",
    "wire",
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


def built(root: Path) -> list[Path]:
    """The extension modules (and mypyc's shared runtime) a build leaves under `root`."""
    found = list((root / "services" / "runtime").rglob("*.so"))
    return found + list(root.glob("*__mypyc*.so"))


def clean(root: Path) -> None:
    """Remove every built extension and the build directory."""
    for path in built(root):
        path.unlink()
    shutil.rmtree(root / "build" / "native", ignore_errors=True)


def build(root: Path) -> None:
    """Compile MODULES beside their sources under `root`. The repository is compiled in place;
    another root (an installed copy, whose site-packages mypy would read as sources) through a
    scratch copy of its `services/`."""
    clean(root)
    if root == REPOSITORY:
        _compile(root)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copytree(root / "services", Path(scratch) / "services")
            _compile(Path(scratch))
            for module in built(Path(scratch)):
                shutil.copy2(module, root / module.relative_to(scratch))
    print(f"native: built {len(built(root))} extension modules from {len(MODULES)} sources")


def _compile(root: Path) -> None:
    """setuptools' build_ext --inplace, run from `root` so the extensions land beside their
    sources."""
    from mypyc.build import mypycify
    from setuptools import setup

    sources = [str(root / "services" / "runtime" / f"{m}.py") for m in MODULES]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(MYPY_CONFIG)
        os.chdir(root)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the built modules")
    parser.add_argument("--root", type=Path, default=REPOSITORY, help="the directory of services/")
    parser.add_argument("--require", action="store_true", help="fail when nothing can be built")
    args = parser.parse_args()
    root = args.root.resolve()
    if args.clean:
        clean(root)
        return 0
    try:
        build(root)
    except (Exception, SystemExit) as exc:  # no compiler, no headers: stay pure Python
        clean(root)
        print(f"native: not built ({exc}); the runtime runs as pure Python", file=sys.stderr)
        return 1 if args.require else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
