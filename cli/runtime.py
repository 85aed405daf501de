"""`parallax alerts`, `parallax profile`, `parallax learn` and `parallax nodes`: clients of the
runtime service (--runtime ADDR, mTLS like every client command) to read alerts (once or
following the stream), show behaviour profiles, opt workloads in to or out of learning, and
show what each node's agent could not see (drops, unattributed events, gaps)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli import runtime_views as views
from cli.connection import InsecureOption, RuntimeOption, TlsDirOption, channel, material
from servicekit.errors import ConfigError

console = Console()
errors = Console(stderr=True)
FormatOption = typer.Option("table", "--format", help="table or json (one JSON object a line).")
SEVERITIES = {0: "-", 1: "LOW", 2: "MEDIUM", 3: "HIGH", 4: "CRITICAL"}
PAGE_SIZE = 1000  # the service's maximum


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


def _check_format(output_format: str) -> None:
    if output_format not in ("table", "json"):
        _fail("--format must be table or json")


def _json(message: Any) -> str:
    """Return `message` as one JSON line, fields at their default value included (uid 0, a
    count of 0, an empty list): absent would read as unknown."""
    from google.protobuf.json_format import MessageToDict

    as_dict = MessageToDict(message, always_print_fields_with_no_presence=True)
    return json.dumps(as_dict, separators=(",", ":"))


def _pages(call: Callable[..., Any], request: Any, field: str) -> Iterator[Any]:
    """Yield the `field` items of every page of a List call, following next_page_token."""
    while True:
        answer = call(request, timeout=10)
        yield from getattr(answer, field)
        if not answer.next_page_token:
            return
        request.page_token = answer.next_page_token


def _list(call: Callable[..., Any], request: Any, field: str) -> list[Any]:
    """Return the `field` items of every page of a List call; exit on an RPC error."""
    import grpc

    try:
        return list(_pages(call, request, field))
    except grpc.RpcError as exc:
        _fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]


def _where(alert: Any) -> str:
    """Return the latest occurrence's pod and node, and how far the alert spread."""
    latest = alert.latest_occurrence
    pod = latest.pod_name or alert.workload.pod  # a service without latest_occurrence
    node = latest.node_name or alert.node_name
    spread = [
        f"{len(names)} {noun}s"
        for names, noun in ((alert.pod_names, "pod"), (alert.node_names, "node"))
        if len(names) > 1
    ]
    return f"{pod} on {node}" + (f" ({', '.join(spread)})" if spread else "")


def _alert_row(table: Table, alert: Any) -> None:
    ref = alert.workload
    table.add_row(
        alert.last_seen_time.ToJsonString()[:19], SEVERITIES[alert.severity], alert.rule_id,
        escape(f"{ref.namespace}/{ref.name}/{ref.container}"), escape(_where(alert)),
        str(alert.count), escape(alert.message),
    )  # fmt: skip


def _alerts_table(alerts: list[Any]) -> None:
    table = Table("last seen", "severity", "rule", "workload", "latest pod", "count", "message")
    for alert in alerts:
        _alert_row(table, alert)
    console.print(table)


def _list_alerts(stub: Any, limit: int) -> tuple[list[Any], int]:
    """Return the alerts, most recent first (at most `limit` when not 0), and how many more
    there are. An alert that moves up while the pages are read shows once."""
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    found: dict[str, Any] = {}
    more = 0
    for alert in _pages(stub.ListAlerts, pb.ListAlertsRequest(page_size=PAGE_SIZE), "alerts"):
        if alert.name in found:
            continue
        if limit and len(found) >= limit:
            more += 1
        else:
            found[alert.name] = alert
    return list(found.values()), more


def alerts(
    follow: bool = typer.Option(False, "--follow", help="Stream new and updated alerts."),
    limit: int = typer.Option(0, "--limit", min=0, help="Show at most N alerts (0: all)."),
    output_format: str = FormatOption,
    runtime: str = RuntimeOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """List alerts, most recent first, or follow them as they happen."""
    import grpc
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    _check_format(output_format)
    stub = _stub(runtime, tls_dir, insecure)
    try:
        if not follow:
            found, more = _list_alerts(stub, limit)
            if output_format == "json":
                for alert in found:
                    print(_json(alert))
            else:
                _alerts_table(found)
            if more:
                errors.print(
                    f"{more} more alert{'s' if more > 1 else ''} not shown (--limit {limit})"
                )
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
    return (
        f"{kind:8} {SEVERITIES[alert.severity]:8} {alert.rule_id} x{alert.count} "
        f"[{_where(alert)}] {alert.message}"
    )


def profile(
    workload: str = typer.Argument(..., help="NAMESPACE/KIND/NAME(/CONTAINER)"),
    output_format: str = FormatOption,
    runtime: str = RuntimeOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """Show the current behaviour profile of each container of a workload."""
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    _check_format(output_format)
    stub = _stub(runtime, tls_dir, insecure)
    request = pb.ListProfilesRequest(workload=_workload(workload), page_size=PAGE_SIZE)
    found = _list(stub.ListProfiles, request, "profiles")
    if not found:
        _fail(f"no profile for {workload}")
    now = time.time()
    for item in found:
        if output_format == "json":
            print(_json(item))
        else:
            views.profile_table(item, now)


def nodes(
    gaps: int = typer.Option(5, "--gaps", min=0, help="Show each node's N most recent gaps."),
    output_format: str = FormatOption,
    runtime: str = RuntimeOption,
    tls_dir: Path | None = TlsDirOption,
    insecure: bool = InsecureOption,
) -> None:
    """List the nodes with an agent: reporting or silent, events dropped, unattributed, gaps."""
    from parallax.runtime.v1 import runtime_service_pb2 as pb

    _check_format(output_format)
    stub = _stub(runtime, tls_dir, insecure)
    found = _list(stub.ListNodes, pb.ListNodesRequest(page_size=PAGE_SIZE), "nodes")
    if not found and output_format == "table":
        errors.print("no node has reported yet")
    now = time.time()
    for node in found:
        if output_format == "json":
            print(_json(node))
        else:
            views.node_table(node, now, gaps)


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
    app.command()(nodes)
