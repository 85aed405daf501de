"""The runtime store on SQLite and on a real PostgreSQL: a batch's dedupe record and deltas in
one transaction, upserts of changed items, the whole state back after a restart, and a resent
batch key failing the transaction as a whole."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.exc import IntegrityError

from servicekit.storage import engine
from services.runtime import domain, wire
from services.runtime.engine import Engine
from services.runtime.store import Changes, RuntimeStore
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
