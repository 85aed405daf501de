"""`parallax alerts`, `parallax profile`, `parallax learn` and `parallax nodes`: clients of the
runtime service (--runtime ADDR, mTLS like every client command) to read alerts (once or
following the stream), show behaviour profiles, opt workloads in to or out of learning, and
show what each node's agent could not see (drops, unattributed events, gaps)."""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cli.connection import InsecureOption, RuntimeOption, TlsDirOption, channel, material
from servicekit.errors import ConfigError

console = Console()
errors = Console(stderr=True)
FormatOption = typer.Option("table", "--format", help="table or json (one JSON object a line).")
SEVERITIES = {0: "-", 1: "LOW", 2: "MEDIUM", 3: "HIGH", 4: "CRITICAL"}
STATES = {1: "LEARNING", 2: "COMPLETE", 3: "PARTIAL"}
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


def _span(seconds: float) -> str:
    """Return a duration as "2d3h", "1h5m", "4m10s" or "12s"."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _coverage(cover: Any, now: float) -> list[str]:
    """Return the coverage figures of a profile as lines to print."""
    if cover.HasField("last_new_item_time"):
        last = cover.last_new_item_time
        since = f"{_span(now - last.seconds)} ago ({last.ToJsonString()[:19]}Z)"
    else:
        since = "never"
    return [
        f"  replicas {cover.replicas_observed}, start observed {cover.start_observed}"
        + (f" ({cover.start_observed_reason})" if cover.start_observed_reason else ""),
        f"  events {cover.events_received}, dropped {cover.events_dropped}, "
        f"unattributed {cover.unattributed_events}, observation gaps {cover.observation_gaps}",
        f"  last new item {since}, {_span(cover.watched_duration.seconds)} of it watched; "
        f"learning window {_span(cover.learning_window.seconds)}, "
        f"observed {_span(cover.observed_duration.seconds)}",
    ]


def _enum(message: Any, field: str) -> str:
    """Return the enum value of `message.field` as a lower-case name without the enum's prefix
    (DROP_SOURCE_RING_BUFFER -> "ring_buffer"), or its number when this CLI does not know it."""
    values = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number
    value = getattr(message, field)
    if value not in values:
        return str(value)
    name: str = values[value].name
    return name.removeprefix(values[0].name.removesuffix("UNSPECIFIED")).lower()


def _endpoint(address: str, port: int) -> str:
    """Return "10.0.0.1:80" or "[fd00::1]:80" (the address alone when the port is 0)."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else address


def _time(stamp: Any) -> str:
    return f"{stamp.ToJsonString()[:19]}Z"


def _errnos(numbers: Iterable[int]) -> str:
    return ", ".join(f"{errno.errorcode.get(n, 'errno')} ({n})" for n in numbers)


def _section(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print one category of a profile or node: its title line, then its rows as a table."""
    console.print(f"  {title}", markup=False)
    if not rows:
        return
    table = Table(*headers, box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    console.print(Padding(table, (0, 0, 0, 4), expand=False))


def _syscalls(item: Any) -> None:
    """Print the syscalls grouped by architecture, start-up mark and replicas seen."""
    groups: dict[tuple[str, bool, int], list[str]] = {}
    for s in item.syscalls:
        key = (_enum(s, "arch"), s.runtime_startup, s.replicas_seen)
        groups.setdefault(key, []).append(s.syscall_name or str(s.syscall_number))
    startup = sum(s.runtime_startup for s in item.syscalls)
    _section(
        f"syscalls: {len(item.syscalls)}, {startup} only at the runtime's start-up",
        ("seen", "arch", "replicas", "count", "names"),
        [
            (
                "runtime start-up only" if early else "workload",
                arch,
                seen,
                len(names),
                ", ".join(names),
            )
            for (arch, early, seen), names in sorted(groups.items())
        ],
    )


def _user(pair: Any) -> str:
    if pair.uid != pair.euid:
        return "setuid to root" if pair.euid == 0 else "setuid"
    return "root" if pair.uid == 0 else ""


def _joined(values: Iterable[str]) -> str:
    return ", ".join(values)


def _workload_of(peer: Any) -> str:
    ref = peer.peer
    return f"{ref.namespace}/{ref.kind}/{ref.name}" if peer.HasField("peer") else ""


Row = Callable[[Any], tuple[object, ...]]
# The profile's item categories after syscalls: title ({} is the count), Profile field, column
# headers, an item's row.
CATEGORIES: tuple[tuple[str, str, tuple[str, ...], Row], ...] = (
    ("executables: {}", "executables", ("path", "arguments", "parents", "replicas"),
     lambda e: (e.path, " ".join(e.argv[1:]), _joined(e.parent_paths), e.replicas_seen)),
    ("file opens: {}", "file_opens", ("path", "access", "executables", "replicas"),
     lambda f: (f.path_pattern, "write" if f.writes else "read", _joined(f.executables),
                f.replicas_seen)),
    ("failed opens: {}", "failed_file_opens", ("path", "errnos", "executables", "replicas"),
     lambda f: (f.path_pattern, _errnos(f.errnos), _joined(f.executables), f.replicas_seen)),
    ("network peers: {} (for accept, the port is the container's own)", "network_peers",
     ("direction", "protocol", "peer", "dns names", "workload", "replicas"),
     lambda p: (_enum(p, "direction"), _enum(p, "protocol"), _endpoint(p.address, p.port),
                _joined(p.dns_names), _workload_of(p), p.replicas_seen)),
    ("dns names: {}", "dns_names", ("name", "addresses", "replicas"),
     lambda d: (d.dns_name, _joined(d.addresses), d.replicas_seen)),
    ("capabilities: {}", "capabilities", ("capability", "allowed", "denied", "mark", "replicas"),
     lambda c: (c.capability_name or c.capability_number, c.allowed_count, c.denied_count,
                "runtime start-up only" if c.runtime_startup else "", c.replicas_seen)),
    ("user ids: {}", "user_ids", ("uid", "euid", "mark", "executables", "replicas"),
     lambda u: (u.uid, u.euid, _user(u), _joined(u.executables), u.replicas_seen)),
)  # fmt: skip


def _profile_table(item: Any, now: float) -> None:
    state = STATES.get(item.state, "?")
    reason = item.state_reason
    said = reason if reason.startswith(f"{state}:") else f"{state}: {reason}".rstrip(": ")
    console.print(f"[bold]{escape(item.name)}[/bold]  {escape(said)}")
    current = "current" if item.current else "superseded"
    console.print(f"  image {item.image} ({item.image_digest}, {current})", markup=False)
    for line in _coverage(item.coverage, now):
        console.print(line, markup=False)
    _syscalls(item)
    for title, field, headers, row in CATEGORIES:
        found = getattr(item, field)
        _section(title.format(len(found)), headers, [row(one) for one in found])


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
            _profile_table(item, now)


def _node_table(node: Any, now: float, gaps: int) -> None:
    """Print a node's agent, its state and what the agent could not see there."""
    last = node.last_report_time
    console.print(
        f"[bold]{escape(node.node_name)}[/bold]  {_enum(node, 'state')}, last report "
        f"{_time(last)} ({_span(now - last.seconds)} ago)"
    )
    console.print(
        f"  agent {node.agent_id} {node.agent_version}, kernel {node.kernel_release} "
        f"({_enum(node, 'arch')}), session {node.session_id} acknowledged up to "
        f"{node.last_acknowledged_sequence}, first report {_time(node.first_report_time)}",
        markup=False,
    )
    drops = sum(d.dropped_total for d in node.drop_counters)
    unattributed = sum(u.count for u in node.unattributed_counts)
    console.print(
        f"  events received {node.events_received}, dropped {drops}, "
        f"unattributed {unattributed}, gaps {len(node.gaps)}",
        markup=False,
    )
    _section(
        f"drops by event type and source: {len(node.drop_counters)}",
        ("event type", "source", "dropped"),
        [(_enum(d, "event_type"), _enum(d, "source"), d.dropped_total) for d in node.drop_counters],
    )
    _section(
        f"unattributed by event type and reason: {len(node.unattributed_counts)}",
        ("event type", "reason", "count"),
        [(_enum(u, "event_type"), _enum(u, "reason"), u.count) for u in node.unattributed_counts],
    )
    shown = node.gaps[:gaps]
    _section(
        f"gaps: {len(node.gaps)}, newest first"
        + (f" (the {len(shown)} most recent: --gaps N)" if len(shown) < len(node.gaps) else ""),
        ("event type", "reason", "start", "end", "lasted", "detail"),
        [_gap(g, now) for g in shown],
    )


def _gap(gap: Any, now: float) -> tuple[object, ...]:
    start = gap.start_time.seconds
    ended = gap.HasField("end_time")
    types = "all" if not gap.event_type else _enum(gap, "event_type")
    return (
        types, _enum(gap, "reason"), _time(gap.start_time),
        _time(gap.end_time) if ended else "ongoing",
        _span((gap.end_time.seconds if ended else now) - start), gap.detail,
    )  # fmt: skip


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
            _node_table(node, now, gaps)


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
