"""How `parallax profile` and `parallax nodes` print what the runtime service answers: a
profile's state, coverage and item categories, and a node's agent with what it could not see
(drops, unattributed events, gaps), as Rich tables, with enum values by their short names."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

console = Console()
STATES = {1: "LEARNING", 2: "COMPLETE", 3: "PARTIAL"}


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


def profile_table(item: Any, now: float) -> None:
    """Print a profile: its state, image, coverage, then each item category as a table."""
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


def node_table(node: Any, now: float, gaps: int) -> None:
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
