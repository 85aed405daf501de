"""The posture store on SQLite and on a real PostgreSQL: scans, findings, filters, paging and
history (new, unchanged, fixed) across scans of the same source."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from servicekit.errors import NotFound
from servicekit.storage import engine
from services.posture.domain import (
    Finding,
    ObjectRef,
    ScanError,
    ScanReport,
    Severity,
    SourceLocation,
    Suppression,
)
from services.posture.history import HistoryState, ScanRecord, ScanState
from services.posture.store import FindingFilter, PostureStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def finding(
    control: str, name: str, severity: Severity = Severity.HIGH, **extra: object
) -> Finding:
    ref = ObjectRef(SourceLocation("shop.yaml", 0, 1), "apps/v1", "Deployment", "shop", name)
    return Finding(
        control_id=control,
        severity=severity,
        object=ref,
        field_path="spec.template.spec.containers[0].securityContext.privileged",
        message=f"{name} is privileged",
        patch=({"op": "replace", "path": "/spec", "value": 1},),
        suppression=extra.get("suppression"),  # type: ignore[arg-type]
    )


def scan(store: PostureStore, scan_id: str, findings: list[Finding], at: datetime) -> ScanRecord:
    store.create_scan(ScanRecord(scan_id, "shop.yaml", "shop", ScanState.RUNNING, at))
    return store.complete_scan(scan_id, ScanReport(tuple(findings), (), 3), at)


@pytest.fixture
def store(database_url: str) -> Iterator[PostureStore]:
    bound: Engine = engine(database_url)
    yield PostureStore(bound)
    bound.dispose()


def test_scan_round_trip_and_counts(store: PostureStore) -> None:
    suppressed = finding(
        "CTR-03", "cart", Severity.LOW, suppression=Suppression("accepted", "config")
    )
    done = scan(store, "s1", [finding("CTR-01", "cart"), suppressed], T0)
    assert done.state is ScanState.SUCCEEDED
    assert done.severity_counts["HIGH"] == 1
    assert done.suppressed_count == 1
    assert done.new_count == 2
    again = store.get_scan("s1")
    assert again.complete_time == T0
    assert again.objects_scanned == 3


def test_history_new_unchanged_fixed(store: PostureStore) -> None:
    scan(store, "s1", [finding("CTR-01", "cart"), finding("CTR-02", "cart")], T0)
    later = T0 + timedelta(hours=1)
    second = scan(store, "s2", [finding("CTR-01", "cart"), finding("CTR-04", "web")], later)
    assert (second.previous_scan, second.new_count, second.fixed_count) == ("s1", 1, 1)
    listed, more, total = store.list_findings(
        FindingFilter(scan_id="s2", include_fixed=True), 0, 10
    )
    states = {f.finding.control_id: (f.state, f.first_seen_time) for f in listed}
    assert states == {
        "CTR-01": (HistoryState.UNCHANGED, T0),
        "CTR-04": (HistoryState.NEW, later),
        "CTR-02": (HistoryState.FIXED, T0),
    }
    assert (more, total) == (False, 3)


def test_filters_and_paging(store: PostureStore) -> None:
    findings = [finding(f"CTR-{i:02d}", f"w{i}", Severity(1 + i % 4)) for i in range(1, 13)]
    scan(store, "s1", findings, T0)
    high, _, total = store.list_findings(FindingFilter(minimum_severity=Severity.HIGH), 0, 100)
    assert total == 6 and all(f.finding.severity >= Severity.HIGH for f in high)
    one, _, _ = store.list_findings(FindingFilter(name="w5"), 0, 100)
    assert [f.finding.control_id for f in one] == ["CTR-05"]
    seen: list[str] = []
    offset, more = 0, True
    while more:
        chunk, more, _ = store.list_findings(FindingFilter(), offset, 5)
        seen += [f.id for f in chunk]
        offset += len(chunk)
    assert len(seen) == len(set(seen)) == 12


def test_errors_make_a_partial_scan(store: PostureStore) -> None:
    store.create_scan(ScanRecord("s1", "x", "x", ScanState.RUNNING, T0))
    problem = ScanError(SourceLocation("bad.yaml", 2, 14), "document 2 is not valid YAML")
    done = store.complete_scan("s1", ScanReport((), (problem,), 0), T0)
    assert done.state is ScanState.PARTIAL
    assert store.get_scan("s1").errors == (problem,)


def test_missing_scan_is_not_found(store: PostureStore) -> None:
    with pytest.raises(NotFound, match="scans/nope"):
        store.get_scan("nope")
    with pytest.raises(NotFound):
        store.list_findings(FindingFilter(scan_id="nope"), 0, 10)
