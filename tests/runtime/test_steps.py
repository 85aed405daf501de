"""Collapsing a batch into steps changes nothing rules and profiles produce: the same batch
applied event by event and collapsed gives equal alerts (counts, first and last seen), profile
items (tags, pods, flags, capability counts) and event counts, also when an exec or a DNS answer
changes an event's context between repeats. Plus the cross-batch cache of translations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parallax.runtime.v1 import event_pb2

from servicekit.storage import engine as make_engine
from services.runtime import domain, wire
from services.runtime.engine import Engine
from services.runtime.steps import NEVER
from services.runtime.store import RuntimeStore
from tests.packing import packed
from tests.runtime import builders as b
from tests.runtime.server import Clock

TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/"


def dns(name: str, address: str, **extra: Any) -> event_pb2.Event:
    query = event_pb2.DnsQuery(query_name=name, query_type="A", answer_addresses=[address])
    return b.wire_event(dns_query=query, **extra)


def capability(**extra: Any) -> event_pb2.Event:
    cap = event_pb2.CapabilityUse(
        capability_name="CAP_NET_RAW", capability_number=13, allowed=True, count=1
    )
    return b.wire_event(capability_use=cap, **extra)


def flow(address: str, port: int, local_port: int, **extra: Any) -> event_pb2.Event:
    event = b.wire_flow(address, port, **extra)
    event.network_flow.local_port = local_port
    return event


def fork(child: int, **extra: Any) -> event_pb2.Event:
    return b.wire_event(process_fork=event_pb2.ProcessFork(child_pid=child), **extra)


def scenario() -> list[event_pb2.Event]:
    t = b.T0
    return [
        b.wire_exec("/app/server", pid=10, at=t),
        *[b.wire_open("/etc/app.conf", pid=10, at=t + i) for i in range(1, 4)],
        b.wire_exec("/tmp/server", pid=10, at=t + 4),  # same pid, same comm: a new executable
        b.wire_open("/etc/app.conf", pid=10, at=t + 5),
        *[flow("10.0.0.5", 443, 40000 + i, pid=10, at=t + 6 + i) for i in range(2)],
        dns("api.example.com", "10.0.0.5", pid=10, at=t + 8),
        flow("10.0.0.5", 443, 40009, pid=10, at=t + 9),
        *[capability(pid=10, at=t + 10 + i) for i in range(3)],
        *[flow("169.254.169.254", 80, 41000 + i, pid=10, at=t + 13 + i) for i in range(3)],
        fork(20, pid=10, at=t + 16),
        b.wire_exec("/bin/sh", "-c", "true", pid=20, ppid=10, at=t + 17),
        b.wire_open("/etc/app.conf", pid=20, ppid=10, at=t + 18),
        b.wire_exec("/bin/sh", "-c", "true", pid=20, ppid=10, at=t + 19),
        b.wire_open("/etc/app.conf", pid=10, at=t + 20),
        b.wire_event(process_exit=event_pb2.ProcessExit(), pid=20, ppid=10, at=t + 21),
        fork(20, pid=10, at=t + 22),
        b.wire_open("/etc/app.conf", pid=20, ppid=10, at=t + 23),
        b.wire_open("/etc/other", pid=30, at=t + 24),  # an unknown process: named by its comm
        fork(30, pid=10, at=t + 25),  # then pid 30 is a child of /tmp/server
        b.wire_open("/etc/other", pid=30, at=t + 26),
        *[
            b.wire_open(f"/data/{i}/cache", return_value=-2, pid=10, at=t + 27 + i)
            for i in range(3)
        ],
        *[b.wire_open(f"/srv/{i}/out", flags=0o101, pid=10, at=t + 30 + i) for i in range(2)],
        *[b.wire_open(f"{TOKEN}..{i}/token", pid=10, at=t + 32 + i) for i in range(2)],
        dns("x.example.com", "10.0.0.9", pid=10, at=t + 40),
        flow("10.0.0.9", 443, 42000, pid=10, at=t + 41),
        dns("x.example.com", "10.0.0.9", pid=12, at=t + 42),  # the same answer again: no change
        flow("10.0.0.9", 443, 42001, pid=10, at=t + 43),
        dns("y.example.com", "10.0.0.9", pid=12, at=t + 44),  # a new name for the address
        flow("10.0.0.9", 443, 42002, pid=10, at=t + 45),
    ]


def one_by_one(batch: domain.Batch) -> domain.Batch:
    """The same batch with every event its own step, each translated on its own."""
    singles = []
    for event in scenario():
        (step,) = wire.batch(b.batch(1, [event]), b.T0).steps
        singles.append(step)
    return domain.Batch(batch.key, batch.report, tuple(singles), batch.event_count)


def outcome(core: Engine) -> tuple[Any, ...]:
    profile = core.current[(b.CART, "cart")]
    items = {
        (c.value, k): (i.first_seen, sorted(i.pods), sorted(i.tags), i.flags, i.allowed, i.denied)
        for c, table in profile.items.items()
        for k, i in table.items()
    }
    alerts = sorted(
        (a.rule_id, a.key, a.count, a.first_seen, a.last_seen, tuple(sorted(a.evidence.items())))
        for a in core.alerts.by_id.values()
    )
    return (
        profile.events_received,
        items,
        alerts,
        sorted(core.boxes[("uid-cart-1", "cart")].processes),
    )


def test_collapsed_steps_equal_event_by_event(tmp_path: Path) -> None:
    collapsed = wire.batch(b.batch(1, scenario()), b.T0)
    assert len(collapsed.steps) < collapsed.event_count == len(scenario())
    results = []
    for name, batch in (("steps", collapsed), ("single", one_by_one(collapsed))):
        bound = make_engine(f"sqlite:///{tmp_path / name}.db")
        core = Engine(RuntimeStore(bound), lambda: b.T0 + 100, default_window=3600)
        core.ingest(batch)
        results.append(outcome(core))
        bound.dispose()
    assert results[0] == results[1]
    _, items, alerts, _ = results[0]
    assert items[("file", ("/etc/app.conf",))][2] == ["/app/server", "/bin/sh", "/tmp/server"]
    assert items[("file", ("/etc/other",))][2] == ["/tmp/server", "cart"]
    assert items[("peer", (1, 1, "10.0.0.5", 443))][2] == ["api.example.com"]
    assert items[("peer", (1, 1, "10.0.0.9", 443))][2] == ["x.example.com", "y.example.com"]
    assert [s.count for s in collapsed.steps if s.event.at >= b.T0 + 41 and s.event.pid == 10] == [
        2,
        1,
    ]  # a repeated answer keeps the flows one step; a new name starts another
    assert items[("capability", (13,))][4] == 3
    (metadata,) = [a for a in alerts if a[0] == "R0005"]
    assert metadata[2:5] == (3, b.T0 + 13, b.T0 + 15)


def test_translations_are_reused_across_batches_per_node() -> None:
    plans = wire.Plans()
    first = wire.batch(b.batch(1, scenario()), b.T0, plans)
    second = wire.batch(b.batch(2, scenario()), b.T0, plans)
    assert [s.event.payload for s in first.steps] == [s.event.payload for s in second.steps]
    assert first.steps[1].event.origin is second.steps[1].event.origin
    request = b.batch(1, scenario())
    request.node_name = "n2"
    other = wire.batch(request, b.T0, plans)
    assert other.steps[1].event.origin.node == "n2"
    small = wire.Plans(limit=5)
    wire.batch(b.batch(1, scenario()), b.T0, small)
    assert sum(len(p) for p, _, _ in small.nodes.values()) > 5  # grows within a batch, then
    wire.batch(b.batch(2, scenario()[:2]), b.T0, small)  # is dropped when the next overflows
    assert sum(len(p) for p, _, _ in small.nodes.values()) == 2


def test_opens_only_the_profile_sees_merge_by_pattern() -> None:
    """Failed opens of distinct paths with one pattern are one step, in both wire forms;
    successful writes (drift evidence) and token reads (R0003) stay apart by path."""
    for form in (b.batch(1, scenario()), packed(b.batch(1, scenario()))):
        opens = [
            (s.event.payload.path, s.count)
            for s in wire.batch(form, b.T0).steps
            if isinstance(s.event.payload, domain.FileOpen) and s.event.at >= b.T0 + 27
        ]
        assert opens == [
            ("/data/0/cache", 3),
            ("/srv/0/out", 1),
            ("/srv/1/out", 1),
            (f"{TOKEN}..0/token", 1),
            (f"{TOKEN}..1/token", 1),
        ]


def batches_over_time() -> list[list[event_pb2.Event]]:
    """Repeats across batches, with the contexts of their evaluation changing in between: a new
    DNS name for a peer, a new executable for a pid, the profile completing."""
    t = b.T0
    steady = [
        b.wire_open("/etc/app.conf", pid=10, at=t),
        b.wire_open("/data/1/cache", return_value=-2, pid=10, at=t),
        flow("10.0.0.5", 443, 40000, pid=10, at=t),
        b.wire_flow("10.0.0.7", 8443, pid=10, at=t),
    ]
    return [
        [b.wire_exec("/app/server", pid=10, at=t), *steady],
        steady,
        [dns("api.example.com", "10.0.0.5", pid=10, at=t), *steady],
        steady,
        [b.wire_exec("/app/v2", pid=10, at=t), *steady],
        steady,
    ]


def test_repeats_in_later_batches_change_nothing_until_their_context_does(tmp_path: Path) -> None:
    """The engine counts a repeat of an event whose last application changed nothing, in the
    same context, without applying it again; a new DNS name, a new executable or a finished
    learning window applies it again. The outcome equals applying every step."""
    results, quiet = [], []
    for name in ("remembered", "applied"):
        clock = Clock(b.T0)
        bound = make_engine(f"sqlite:///{tmp_path / name}.db")
        core = Engine(RuntimeStore(bound), clock, default_window=3600)
        plans = wire.Plans()
        for sequence, events in enumerate(batches_over_time() * 2, start=1):
            if sequence == 7:
                b.watch(core, 7200)  # the window passes, watched: the profile completes
            batch = wire.batch(packed(b.batch(sequence, events)), clock.now, plans)
            if name == "applied":
                for step in batch.steps:
                    step.memo = None
            core.ingest(batch)
        assert core.current[(b.CART, "cart")].state.name == "COMPLETE"
        late = [b.wire_open("/etc/late.conf", pid=10, at=clock.now)]
        for sequence in (13, 14, 15):  # quiet while COMPLETE, learned once learning restarts
            if sequence == 15:
                core.set_learning(b.CART, "", True, None)
            batch = wire.batch(packed(b.batch(sequence, late)), clock.now, plans)
            if name == "applied":
                for step in batch.steps:
                    step.memo = None
            core.ingest(batch)
        results.append(outcome(core))
        quiet.append([p for p in plans.nodes["n1"][2].values() if p.quiet not in (None, NEVER)])
        bound.dispose()
    assert results[0] == results[1]
    received, items, alerts, _ = results[0]
    assert received == sum(len(events) for events in batches_over_time() * 2) + 3
    assert ("file", ("/etc/late.conf",)) in items
    assert items[("file", ("/etc/app.conf",))][2] == ["/app/server", "/app/v2"]
    assert items[("peer", (1, 1, "10.0.0.5", 443))][2] == ["api.example.com"]
    assert not alerts
    assert len(quiet[0]) == 4 and not quiet[1]  # only the remembered run skipped repeats
