"""Every `parallax` command renders its help: catches broken rich markup in help texts."""

from __future__ import annotations

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from cli.__main__ import app


def _paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        found += _paths(sub, (*prefix, name))
    return found


@pytest.mark.parametrize("path", _paths(get_command(app)), ids=lambda p: " ".join(p) or "parallax")
def test_help_renders(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert isinstance(app, typer.Typer)


def test_scan_alone_loads_neither_grpc_nor_service_clients() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from cli.__main__ import main\n"
        "try:\n    main(['scan', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('grpc', 'cli.runtime', 'cli.policygen') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_commands_loaded_alone_are_the_ones_their_module_registers() -> None:
    from cli.__main__ import ALONE, build

    for command, module in ALONE.items():
        assert command in {c.name for c in get_command(build((module,))).commands.values()}  # type: ignore[attr-defined]
