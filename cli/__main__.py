"""Entry point of the `parallax` console script: assembles the sub-commands. Each command module
is imported only when needed: `parallax scan` loads no grpc and no service client, so a CI scan
starts fast; every other invocation (and `--help`) loads them all."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import typer

MODULES = ("stack", "scan", "policygen", "runtime", "agent", "certs", "demo", "correlator")
# Commands whose module alone suffices; the rest assemble the whole app.
ALONE = {"scan": "scan"}


def build(modules: Sequence[str] = MODULES) -> typer.Typer:
    """The `parallax` app with the commands of `modules`."""
    app = typer.Typer(
        name="parallax",
        help="Parallax: Kubernetes posture and eBPF runtime evidence in one picture.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    # A callback keeps `parallax` a group even with one module loaded (`parallax scan ...`).
    app.callback()(_root)
    for name in modules:
        importlib.import_module(f"cli.{name}").register(app)
    return app


def _root() -> None:
    """Parallax: Kubernetes posture and eBPF runtime evidence in one picture."""


def __getattr__(name: str) -> Any:
    # `cli.__main__.app` is the whole app, built on first use (tests and `python -m cli`).
    if name == "app":
        return build()
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the `parallax` command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    alone = ALONE.get(args[0]) if args else None
    build((alone,) if alone else MODULES)(args)


if __name__ == "__main__":
    main()
