"""`parallax agent check`, `parallax run` and `parallax record`: the node agent's local commands.
They call agent.check, agent.localpod and agent.record; no service needs to run."""

from __future__ import annotations

import signal

import typer
from rich.console import Console

console = Console(stderr=True)
agent_app = typer.Typer(help="The eBPF node agent.", no_args_is_help=True)


@agent_app.command("check")
def check() -> None:
    """Check (and repair where safe) this node's eBPF prerequisites, then self-test."""
    from agent.check import run_checks

    results = run_checks()
    for r in results:
        mark = "[green]ok[/green]  " if r.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {r.name}: {r.detail}", highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def run(
    command: list[str] = typer.Argument(..., help="The command, after --."),
    namespace: str = typer.Option(..., "--namespace", help="The local pod's namespace."),
    pod: str = typer.Option(..., "--pod", help="The local pod's name."),
    label: list[str] = typer.Option([], "--label", help="A pod label k=v; repeatable."),
    netns: bool = typer.Option(False, "--netns", help="Give the pod its own network namespace."),
) -> None:
    """Run a command as a local pod: its own cgroup v2 (and netns), attributed like a real pod."""
    from agent.localpod import local_pod

    labels = dict(item.split("=", 1) for item in label if "=" in item)
    if len(labels) != len(label):
        console.print("--label takes k=v")
        raise typer.Exit(2)
    with local_pod(namespace, pod, labels=labels, netns=netns) as p:
        console.print(f"pod {namespace}/{pod}: cgroup {p.cgroup_id} {p.address}", highlight=False)
        proc = p.spawn(command)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        code = proc.wait()
    raise typer.Exit(code if code >= 0 else 128 - code)


def record(
    command: list[str] = typer.Argument(..., help="The command, after --."),
    runtime: str = typer.Option("", "--runtime", help="Also ship to the runtime service (later)."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
) -> None:
    """Record one command from start to exit and print its profile, like `spoc record`."""
    from agent import record as recorder

    if runtime:
        console.print("--runtime is not supported yet; printing the profile only")
    profile = recorder.record(command)
    print(profile.to_json() if as_json else profile.to_text())
    raise typer.Exit(profile.exit_code if profile.exit_code >= 0 else 128 - profile.exit_code)


def register(app: typer.Typer) -> None:
    """Add `agent` and the top-level `run` and `record` commands to the `parallax` app."""
    app.add_typer(agent_app, name="agent")
    app.command("run", context_settings={"allow_interspersed_args": False})(run)
    app.command("record", context_settings={"allow_interspersed_args": False})(record)
