"""Entry point of the `parallax` console script: assembles the sub-commands."""

from __future__ import annotations

import typer

from cli import agent, certs, correlator, policygen, runtime, scan, stack

app = typer.Typer(
    name="parallax",
    help="Parallax: Kubernetes posture and eBPF runtime evidence in one picture.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack.register(app)
scan.register(app)
policygen.register(app)
runtime.register(app)
agent.register(app)
certs.register(app)
correlator.register(app)


def main() -> None:
    """Run the `parallax` command line."""
    app()


if __name__ == "__main__":
    main()
