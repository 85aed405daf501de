"""`parallax agent check`, `parallax run` and `parallax record`: the node agent's local commands.
They call agent.check, agent.localpod and agent.record; no service needs to run, but `record
--runtime` ships the recording to a runtime service (mTLS with an agent certificate, like the
agent's)."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from cli.connection import InsecureOption, material
from servicekit.errors import ConfigError

if TYPE_CHECKING:
    from agent.record import Runtime

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
    image: str = typer.Option("", "--image", help="The image reference the pod reports."),
    image_digest: str = typer.Option(
        "", "--image-digest", help="The image digest (sha256:<64 hex>); a new one, a new profile."
    ),
    kind: str = typer.Option("", "--kind", help="The owner workload's kind, with --workload."),
    workload: str = typer.Option("", "--workload", help="The owner workload's name, with --kind."),
) -> None:
    """Run a command as a local pod: its own cgroup v2 (and netns), attributed like a real pod."""
    from agent.localpod import check_identity, local_pod

    labels = dict(item.split("=", 1) for item in label if "=" in item)
    if len(labels) != len(label):
        console.print("--label takes k=v")
        raise typer.Exit(2)
    try:  # before anything is made: a malformed digest or a lone --kind is a usage error
        check_identity(image_digest, kind, workload)
    except ValueError as exc:
        console.print(f"[red]parallax: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    identity = {"image": image, "image_digest": image_digest, "kind": kind, "workload": workload}
    with local_pod(namespace, pod, labels=labels, netns=netns, **identity) as p:
        console.print(f"pod {namespace}/{pod}: cgroup {p.cgroup_id} {p.address}", highlight=False)
        proc = p.spawn(command)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        code = proc.wait()
    raise typer.Exit(code if code >= 0 else 128 - code)


def record(
    command: list[str] = typer.Argument(..., help="The command, after --."),
    runtime: str = typer.Option(
        "", "--runtime", help="Also ship the recording to the runtime service at this address."
    ),
    pod: str = typer.Option("", "--pod", help="The local pod's name (namespace record)."),
    node: str = typer.Option("", "--node", help="The node reported to the runtime (hostname)."),
    tls_dir: Path | None = typer.Option(
        None,
        "--tls-dir",
        help="Agent certificate directory for --runtime (default: PARALLAX_TLS_DIR, then "
        "data/tls/agent-NODE as `parallax up` writes it).",
    ),
    insecure: bool = InsecureOption,
    as_json: bool = typer.Option(
        False, "--json", help="Print the profile as JSON (the command's stdout goes to stderr)."
    ),
) -> None:
    """Record one command from start to exit and print its profile, like `spoc record`."""
    from agent import record as recorder

    target = _runtime(runtime, node or socket.gethostname(), tls_dir, insecure) if runtime else None
    # With --json, stdout carries the profile only: the command writes to stderr instead.
    stdout = sys.stderr.fileno() if as_json else None
    profile = recorder.record(command, pod=pod, stdout=stdout, runtime=target)
    print(profile.to_json() if as_json else profile.to_text())
    if profile.unacknowledged > 0:
        console.print(
            f"[red]{profile.unacknowledged} events were not acknowledged by the runtime at "
            f"{escape(runtime)}: its profile of {profile.pod} is incomplete[/red]"
        )
        raise typer.Exit(3)
    raise typer.Exit(profile.exit_code if profile.exit_code >= 0 else 128 - profile.exit_code)


def _runtime(address: str, node: str, tls_dir: Path | None, insecure: bool) -> Runtime:
    """Where `record --runtime` ships: mTLS with the agent certificate of `node` unless
    --insecure."""
    from agent.record import Runtime

    default = Path("data/tls") / f"agent-{node}"
    try:
        tls = material(tls_dir or (default if (default / "tls.crt").exists() else None), insecure)
    except ConfigError as exc:
        console.print(f"[red]parallax: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    return Runtime(address, tls.channel_credentials() if tls else None, node)


def register(app: typer.Typer) -> None:
    """Add `agent` and the top-level `run` and `record` commands to the `parallax` app."""
    app.add_typer(agent_app, name="agent")
    app.command("run", context_settings={"allow_interspersed_args": False})(run)
    app.command("record", context_settings={"allow_interspersed_args": False})(record)
