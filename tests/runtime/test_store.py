"""The runtime store on SQLite and on a real PostgreSQL: a batch's dedupe record and deltas in
one transaction, upserts of changed items, the whole state back after a restart (alerts with
the pods and nodes they occurred in), a resent batch key failing the transaction as a whole,
and the webhook outbox: new alerts enqueued in their batch's transaction, in order, durably."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from parallax.runtime.v1 import runtime_service_pb2 as pb
from sqlalchemy.exc import IntegrityError

from servicekit.storage import engine
from services.runtime import codec, domain, render, wire
from services.runtime.alerts import AlertState
from services.runtime.engine import Engine
from services.runtime.store import Changes, OutboxCounts, RuntimeStore
from tests.runtime import builders as b


@pytest.fixture
def store(database_url: str) -> Iterator[RuntimeStore]:
    bound = engine(database_url)
    yield RuntimeStore(bound)
    bound.dispose()


def ingest(core: Engine, sequence: int, events: list[object], **extra: object) -> bool:
    return core.ingest(wire.batch(b.batch(sequence, events, **extra), core.clock()))  # type: ignore[arg-type]


def test_engine_state_survives_a_restart(store: RuntimeStore) -> None:
    core = Engine(store, lambda: b.T0 + 10, default_window=60)
    ingest(
        core,
        1,
        [b.wire_exec("/app/server"), b.wire_open("/proc/12/stat")],
        drop_counters=b.drops(3),
    )
    ingest(
        core, 2, [b.wire_exec("/bin/bash", pid=200, ppid=100), b.wire_flow("169.254.169.254", 80)]
    )
    ingest(core, 3, [b.wire_flow("169.254.169.254", 80)])
    again = Engine(store, lambda: b.T0 + 20)
    before, after = core.current[(b.CART, "cart")], again.current[(b.CART, "cart")]
    assert after.name == before.name and after.events_received == 5
    assert {c: set(i) for c, i in after.items.items()} == {
        c: set(i) for c, i in before.items.items()
    }
    assert after.replicas["uid-cart-1"].start_observed is True
    alerts = sorted(again.alerts.by_id.values(), key=lambda a: a.rule_id)
    assert [(a.rule_id, a.count) for a in alerts] == [("R0002", 1), ("R0005", 2)]
    assert alerts[0].tree == core.alerts.by_id[alerts[0].id].tree
    assert again.nodes["n1"].drops() == {(6, 1): 3}
    assert again.workloads[b.CART].pods == {"uid-cart-1"}
    assert store.sequences(domain.BatchKey("agent-n1", "boot-1", "s1", 0)) == {1, 2, 3}


def test_a_stored_batch_key_fails_the_whole_transaction(store: RuntimeStore) -> None:
    key = domain.BatchKey("a", "b", "s", 1)
    store.commit(Changes(batch=key, received=b.T0))
    core = Engine(store, lambda: b.T0)
    profile_changes = Changes(batch=key, received=b.T0)
    ingest(core, 1, [b.wire_exec("/app/server")])
    profile_changes.profiles.append(core.current[(b.CART, "cart")])
    fresh = RuntimeStore(store.engine)
    with pytest.raises(IntegrityError):
        fresh.commit(profile_changes)
    assert store.sequences(key) == {1}


def test_changed_items_are_upserted(store: RuntimeStore) -> None:
    core = Engine(store, lambda: b.T0, default_window=60)
    ingest(core, 1, [b.wire_open("/etc/app.conf", pod="cart-1")])
    ingest(core, 2, [b.wire_open("/etc/app.conf", flags=0o2, pod="cart-2")])
    item = Engine(store, lambda: b.T0).current[(b.CART, "cart")].items
    from services.runtime.profiles import Category

    stored = item[Category.FILE][("/etc/app.conf",)]
    assert stored.pods == {"uid-cart-1", "uid-cart-2"} and stored.flags == 0o2


def test_pruned_dedupe_records_still_read_as_stored(store: RuntimeStore) -> None:
    now = [b.T0]
    core = Engine(store, lambda: now[0], default_window=60)
    for sequence in (1, 2, 3):
        ingest(core, sequence, [b.wire_exec("/app/server")])
    now[0] += 7200
    ingest(core, 4, [b.wire_exec("/app/server")])
    key = domain.BatchKey("agent-n1", "boot-1", "s1", 0)
    assert core.prune(now[0]) == 3 and store.sequences(key) == {4}
    assert ingest(core, 2, [b.wire_exec("/app/server")]) is True
    restarted = Engine(store, lambda: now[0])
    assert ingest(restarted, 1, [b.wire_exec("/app/server")]) is True
    assert ingest(restarted, 5, [b.wire_exec("/app/server")]) is False
    now[0] += 8 * 86400
    assert restarted.prune(now[0]) == 2 and store.sequences(key) == set()
    assert restarted.sequences == {}


def from_node(request: pb.ReportEventsRequest, node: str) -> pb.ReportEventsRequest:
    request.agent_id, request.node_name = f"agent-{node}", node
    return request


def test_an_alert_keeps_its_pods_nodes_and_latest_occurrence_across_a_restart(
    store: RuntimeStore,
) -> None:
    now = [b.T0]
    core = Engine(store, lambda: now[0], default_window=60)
    ingest(core, 1, [b.wire_exec("/app/server"), b.wire_flow("169.254.169.254", 80)])
    now[0] += 3600
    later = b.batch(
        1,
        [
            b.wire_exec("/app/server", pod="cart-7", at=now[0]),
            b.wire_flow("169.254.169.254", 80, pod="cart-7", at=now[0]),
        ],
        session="s9",
    )
    core.ingest(wire.batch(from_node(later, "n9"), now[0]))
    (alert,) = Engine(store, lambda: now[0]).alerts.by_id.values()
    assert (alert.count, alert.origin.pod, alert.origin.node) == (2, "cart-1", "n1")
    assert (alert.pods, alert.nodes) == (("cart-1", "cart-7"), ("n1", "n9"))
    assert (alert.latest.pod, alert.latest.node, alert.latest.pod_uid) == (
        "cart-7",
        "n9",
        "uid-cart-7",
    )
    assert [p.path for p in alert.latest_tree] == ["/app/server"]
    message = render.alert(alert)
    assert (message.workload.pod, message.node_name) == ("cart-1", "n1")
    assert (list(message.pod_names), list(message.node_names)) == (
        ["cart-1", "cart-7"],
        ["n1", "n9"],
    )
    latest = message.latest_occurrence
    assert (latest.pod_name, latest.node_name, latest.container_id) == (
        "cart-7",
        "n9",
        "cid-cart-7",
    )
    assert [p.path for p in latest.process_tree] == ["/app/server"]


def test_an_alert_row_from_before_pods_were_kept_reads_as_one_pod(store: RuntimeStore) -> None:
    core = Engine(store, lambda: b.T0)
    ingest(core, 1, [b.wire_flow("169.254.169.254", 80)])
    (alert,) = core.alerts.by_id.values()
    data = json.loads(codec.alert_row(alert)["data"])[:16]
    old = codec.alert(json.dumps(data))
    assert (old.pods, old.nodes, old.latest, old.latest_tree) == (
        ("cart-1",),
        ("n1",),
        alert.origin,
        alert.tree,
    )


def test_new_alerts_are_enqueued_for_the_webhook_with_their_batch(store: RuntimeStore) -> None:
    outbox = RuntimeStore(store.engine, outbox=True)
    core = Engine(outbox, lambda: b.T0)
    ingest(core, 1, [b.wire_exec("/app/server"), b.wire_flow("169.254.169.254", 80)])
    ingest(core, 2, [b.wire_flow("169.254.169.254", 80)])  # a repeat: not enqueued again
    (alert,) = core.alerts.by_id.values()
    core.set_alert_state(alert.id, AlertState.ACKNOWLEDGED, "looking")
    (waiting,) = outbox.deliveries(10)
    body = json.loads(waiting.payload)
    assert waiting.alert_id == alert.id and (body["ruleId"], body["count"]) == ("R0005", 1)
    assert outbox.outbox_counts() == OutboxCounts(0, 1, 0)
    shell = b.wire_exec("/bin/sh", "-i", pid=300, ppid=100, stdin_kind=3)
    ingest(core, 3, [shell])
    restarted = RuntimeStore(store.engine, outbox=True)
    Engine(restarted, lambda: b.T0)
    first, *more = restarted.deliveries(10)
    assert first == waiting and "R0007" in {json.loads(d.payload)["ruleId"] for d in more}
    assert [d.position for d in more] == sorted(
        d.position for d in more if d.position > first.position
    )
    restarted.finish_delivery(first.position, delivered=True)
    restarted.finish_delivery(first.position, delivered=True)  # already gone: not counted
    for delivery in more:
        restarted.finish_delivery(delivery.position, delivered=False)
    assert restarted.deliveries(10) == []
    assert restarted.outbox_counts() == OutboxCounts(1, 0, len(more))


def test_a_failed_commit_enqueues_nothing_and_no_outbox_no_rows(store: RuntimeStore) -> None:
    key = domain.BatchKey("a", "b", "s", 1)
    store.commit(Changes(batch=key, received=b.T0))
    core = Engine(store, lambda: b.T0)
    ingest(core, 1, [b.wire_flow("169.254.169.254", 80)])
    (alert,) = core.alerts.by_id.values()
    assert store.deliveries(10) == []  # this store has no outbox
    outbox = RuntimeStore(store.engine, outbox=True)
    fresh = replace(alert, id="fresh")
    with pytest.raises(IntegrityError):
        outbox.commit(Changes(batch=key, received=b.T0, alerts=[fresh]))
    assert outbox.deliveries(10) == []
    outbox.commit(Changes(alerts=[fresh]))
    assert [d.alert_id for d in outbox.deliveries(10)] == ["fresh"]
