"""The runtime service.

Its hot modules may be compiled with mypyc (`make native`, scripts/native.py): Python then
imports the C extension beside each source instead of the source. An extension older than its
source would silently run old code, so importing the package refuses that, naming the fix."""

from pathlib import Path


def _refuse_stale_extensions(package: Path) -> None:
    for extension in package.rglob("*.so"):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            raise ImportError(
                f"{extension} is older than {source.name}: run `make native` to rebuild the "
                "compiled modules, or `make native-clean` to run pure Python"
            )


_refuse_stale_extensions(Path(__file__).parent)
