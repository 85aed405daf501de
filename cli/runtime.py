"""`parallax alerts`, `parallax profile` and `parallax learn`: clients of the runtime service
(--runtime ADDR, mTLS like every client command) to read alerts (once or following the stream),
show behaviour profiles, and opt workloads in to or out of learning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.connection import InsecureOption, TlsDirOption, channel, material
from servicekit.errors import ConfigError

console = Console()
errors = Console(stderr=True)
RuntimeOption = typer.Option("127.0.0.1:50052", "--runtime", help="Runtime service address.")
FormatOption = typer.Option("table", "--format", help="table or json (one JSON object a line).")
SEVERITIES = {0: "-", 1: "LOW", 2: "MEDIUM", 3: "HIGH", 4: "CRITICAL"}
STATES = {1: "LEARNING", 2: "COMPLETE", 3: "PARTIAL"}


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]parallax: {escape(message)}[/red]")
    raise typer.Exit(2)


def _stub(address: str, tls_dir: Path | None, insecure: bool) -> Any:
    from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc

    try:
        return pb_grpc.RuntimeServiceStub(channel(address, material(tls_dir, insecure)))
    except ConfigError as exc:
        _fail(str(exc))


def _workload(text: str) -> Any:
    from parallax.type.v1 import workload_pb2

    parts = text.split("/")
    if len(parts) not in (3, 4) or not all(parts):
        _fail(f"WORKLOAD must be NAMESPACE/KIND/NAME(/CONTAINER), got {text!r}")
    namespace, kind, name = parts[:3]
    container = parts[3] if len(parts) == 4 else ""
    return workload_pb2.WorkloadRef(namespace=namespace, kind=kind, name=name, container=container)


def _json(message: Any) -> str:
    from google.protobuf.json_format import MessageToDict

    return json.dumps(MessageToDict(message), separators=(",", ":"))


def _alert_row(table: Table, alert: Any) -> None:
    ref = alert.workload
    table.add_row(
        alert.last_seen_time.ToJsonString()[:19], SEVERITIES[alert.severity], alert.rule_id,
        f"{ref.namespace}/{ref.name}/{ref.container}", str(alert.count), alert.message,
    )  # fmt: skip


def _alerts_table(alerts: list[Any]) -> None:
    table = Table("last seen", "severity", "rule", "workload", "count", "message")
    for alert in alerts:
        _alert_row(table, alert)
    console.print(table)


def alerts(
    follow: bool = typer.Option(False, "--follow", help="Stream new and updated alerts."),
    output_format: str = FormatOption,
    runtime: str = RuntimeOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """List alerts, most recent first, or follow them as they happen."""
    import grpc
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    if output_format not in ("table", "json"):
        _fail("--format must be table or json")
    stub = _stub(runtime, tls_dir, insecure)
    try:
        if not follow:
            found = stub.ListAlerts(pb.ListAlertsRequest(page_size=200), timeout=10).alerts
            if output_format == "json":
                for alert in found:
                    print(_json(alert))
            else:
                _alerts_table(list(found))
            return
        for change in stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=None):
            if change.HasField("alert"):
                print(_json(change) if output_format == "json" else _line(change))
    except grpc.RpcError as exc:
        _fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        return


def _line(change: Any) -> str:
    alert = change.alert
    kind = {1: "current", 3: "new", 4: "updated", 5: "resolved"}.get(change.change_type, "?")
    return f"{kind:8} {SEVERITIES[alert.severity]:8} {alert.rule_id} x{alert.count} {alert.message}"


def profile(
    workload: str = typer.Argument(..., help="NAMESPACE/KIND/NAME(/CONTAINER)"),
    output_format: str = FormatOption,
    runtime: str = RuntimeOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Show the current behaviour profile of each container of a workload."""
    import grpc
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    stub = _stub(runtime, tls_dir, insecure)
    try:
        found = stub.ListProfiles(pb.ListProfilesRequest(workload=_workload(workload)), timeout=10)
    except grpc.RpcError as exc:
        _fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    if not found.profiles:
        _fail(f"no profile for {workload}")
    for item in found.profiles:
        if output_format == "json":
            print(_json(item))
            continue
        cover = item.coverage
        console.print(
            f"[bold]{item.name}[/bold]  {STATES.get(item.state, '?')}: {item.state_reason}"
        )
        console.print(
            f"  replicas {cover.replicas_observed}, start observed {cover.start_observed}, "
            f"events {cover.events_received}, dropped {cover.events_dropped}, "
            f"unattributed {cover.unattributed_events}"
        )
        names = ", ".join(s.syscall_name or str(s.syscall_number) for s in item.syscalls)
        console.print(f"  syscalls: {names}", markup=False)
        for e in item.executables:
            console.print(f"  exec {' '.join(e.argv) or e.path}  (replicas {e.replicas_seen})")
        for f in item.file_opens:
            console.print(f"  open {f.path_pattern}{' (write)' if f.writes else ''}")
        for p in item.network_peers:
            names = f" ({', '.join(p.dns_names)})" if p.dns_names else ""
            console.print(f"  peer {p.address}:{p.port}{names}")


def learn(
    workload: str = typer.Argument(..., help="NAMESPACE/KIND/NAME(/CONTAINER)"),
    stop: bool = typer.Option(False, "--stop", help="Opt the workload out of learning."),
    window: int = typer.Option(
        0, "--window", help="Learning window in seconds (default: service's)."
    ),
    runtime: str = RuntimeOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Opt a workload in to learning (restarting its window), or out with --stop."""
    import grpc
    from google.protobuf.duration_pb2 import Duration
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    request = pb.SetLearningRequest(workload=_workload(workload), enabled=not stop)
    if window:
        request.learning_window.CopyFrom(Duration(seconds=window))
    try:
        answer = _stub(runtime, tls_dir, insecure).SetLearning(request, timeout=10).workload
    except grpc.RpcError as exc:
        _fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    state = "learning" if answer.learning_enabled else "not learning"
    console.print(f"{answer.name}: {state} (window {answer.learning_window.seconds}s)")


def register(app: typer.Typer) -> None:
    """Add the runtime commands to the `parallax` app."""
    app.command()(alerts)
    app.command()(profile)
    app.command()(learn)
