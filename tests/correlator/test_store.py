"""The correlator store on SQLite and PostgreSQL: reports replace their predecessors with their
verdict rows, incidents report creation and change, recommendations round-trip."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from servicekit import storage
from servicekit.errors import NotFound
from services.correlator import recommendations as rec
from services.correlator.store import CorrelatorStore, Row, StoredReport
from tests.correlator import builders as b


@pytest.fixture
def store(database_url: str) -> Iterator[CorrelatorStore]:
    engine = storage.engine(database_url)
    yield CorrelatorStore(engine)
    engine.dispose()


def report(ident: str) -> StoredReport:
    return StoredReport(
        ident, "shop/cart:1", "sha256:aa", 1, datetime(2026, 1, 1, tzinfo=UTC), 2, 3, True, "{}"
    )


def test_report_for_same_image_replaces_the_old_and_its_rows(store: CorrelatorStore) -> None:
    store.put_report(report("r1"))
    store.replace_vulnerabilities("r1", [Row("v1", b.CART, "cart", 3, 1, b"x")])
    store.put_report(report("r2"))
    assert [r.id for r in store.reports()] == ["r2"]
    assert store.vulnerabilities() == []
    store.replace_vulnerabilities(
        "r2", [Row("v2", b.CART, "cart", 2, 2, b"y"), Row("v3", b.CART, "cart", 4, 1, b"z")]
    )
    assert [r.id for r in store.vulnerabilities("shop", "shop/cart:1")] == ["v3", "v2"]


def test_incidents_report_creation_change_and_resolution(store: CorrelatorStore) -> None:
    row = Row("a1", b.CART, "cart", 4, 0, b"one")
    assert store.put_incident(row, False, b.T0) == (True, True)
    assert store.put_incident(row, False, b.T0 + 1) == (False, False)
    assert store.put_incident(replace(row, payload=b"two"), False, b.T0 + 2) == (False, True)
    (listed,) = store.incidents("shop")
    assert listed.payload == b"two" and listed.update_time is not None
    store.put_incident(replace(row, payload=b"two"), True, b.T0 + 3)
    assert store.incidents("shop") == []
    assert len(store.incidents("shop", include_resolved=True)) == 1


def test_recommendations_round_trip_newest_first(store: CorrelatorStore) -> None:
    first = rec.Recommendation(
        name="recommendations/a",
        workload=b.CART,
        container="cart",
        kind=rec.Kind.SECCOMP,
        state=rec.State.CURRENT,
        readiness=rec.Readiness.READY,
        text="{}",
        allowed=("read",),
        policy=b"\x01",
        closes_findings=("scans/s/findings/f",),
        create_time=b.T0,
    )
    store.put_recommendation(first)
    later = replace(first, name="recommendations/b", create_time=b.T0 + 5, supersedes=first.name)
    store.put_recommendation(later)
    store.put_recommendation(replace(first, state=rec.State.STALE, state_reason="syscall x"))
    assert [r.name for r in store.recommendations("shop")] == [later.name, first.name]
    assert store.recommendation(first.name).state is rec.State.STALE
    assert store.recommendations(state=int(rec.State.CURRENT)) == [later]
    with pytest.raises(NotFound):
        store.recommendation("recommendations/none")
