"""Each detection rule on its positive case and on a close negative case, against a profile
learned from a baseline, plus the rule catalog as data (IDs unique and stable) and alert
aggregation of repeats."""

from __future__ import annotations

import pytest

from services.runtime import domain, rules
from services.runtime.alerts import AlertBook, AlertState
from services.runtime.containers import ContainerState
from services.runtime.learning import Profile
from services.runtime.profiles import Context, State
from tests.runtime import builders as b

TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
BASELINE = [
    b.event(b.exec_("/app/server", "--port", "8080"), pid=10, ppid=1),
    b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=11, ppid=10),
    b.event(b.opened(TOKEN), pid=10),
    b.event(b.flow("10.96.0.10", 53, protocol=2), pid=10),
    b.event(domain.Dns("api.stripe.com", ("52.1.1.1",)), pid=10),
    b.event(b.flow("52.1.1.1", 443), pid=10),
    b.event(domain.Capability("CAP_NET_BIND_SERVICE", 10, True, 1), pid=10),
    b.event(domain.SyscallSet(1, (0, 1, 3), ("read", "write", "close"), True, frozenset()), pid=0),
]


def learned(complete: bool = True) -> tuple[Profile, ContainerState]:
    profile = Profile(b.CART, "cart", "shop/cart:1", b.DIGEST, b.T0)
    box = ContainerState()
    for event in BASELINE:
        profile.replica(event.origin, event)
        names = (
            box.dns.get(event.payload.remote_address, ())
            if isinstance(event.payload, domain.Flow)
            else ()
        )
        profile.learn(event, Context(box.exe(event), box.parent_exe(event), names), b.T0)
        box.observe(event)
    if complete:
        profile.state = State.COMPLETE
    return profile, box


def fired(event: domain.Event, complete: bool = True, before: list[domain.Event] = ()) -> set[str]:  # type: ignore[assignment]
    profile, box = learned(complete)
    for earlier in before:
        box.observe(earlier)
    return {d.rule.rule_id for d in rules.evaluate(event, profile, box)}


CASES = [
    # rule, positive event, close negative event
    (
        "R0001",
        b.event(b.exec_("/usr/bin/nmap"), pid=20, ppid=10),
        b.event(b.exec_("/app/server", "--port", "9090"), pid=20),
    ),
    (
        "R0002",
        b.event(b.exec_("/bin/bash"), pid=20, ppid=10),
        b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=20, ppid=10),
    ),
    ("R0003", b.event(b.opened(TOKEN), pid=30, comm="curl"), b.event(b.opened(TOKEN), pid=10)),
    ("R0005", b.event(b.flow("169.254.169.254", 80)), b.event(b.flow("169.254.169.253", 80))),
    (
        "R0005",
        b.event(domain.Dns("metadata.google.internal", ())),
        b.event(domain.Dns("metadata.example.com", ())),
    ),
    ("R0006", b.event(b.flow("52.1.1.9", 3333)), b.event(b.flow("52.1.1.1", 443))),
    (
        "R0006",
        b.event(domain.Dns("xmr.pool.minexmr.com", ())),
        b.event(domain.Dns("pool.ntp.org", ())),
    ),
    (
        "R0007",
        b.event(b.exec_("/bin/sh", "-i", stdin_socket=True)),
        b.event(b.exec_("/usr/bin/python3", "-i", stdin_socket=True)),
    ),
    ("R0008", b.event(b.flow("203.0.113.7", 443)), b.event(b.flow("52.1.1.1", 443))),
    (
        "R0009",
        b.event(domain.Capability("CAP_SYS_ADMIN", 21, True, 1)),
        b.event(domain.Capability("CAP_NET_BIND_SERVICE", 10, True, 1)),
    ),
    (
        "R0010",
        b.event(domain.Deviation(1, 101, "ptrace", 1, "monitor")),
        b.event(domain.Deviation(1, 3, "close", 1, "monitor")),
    ),
    (
        "R0010",
        b.event(domain.Deviation(1, 165, "mount", 1, "seccomp_audit")),
        b.event(domain.Deviation(1, 0, "read", 1, "seccomp_audit")),
    ),
    (
        "R0011",
        b.event(b.exec_("/usr/bin/apt-get", "install", "-y", "nmap")),
        b.event(b.exec_("/usr/bin/dpkg-query", "-l")),
    ),
    (
        "R0011",
        b.event(b.exec_("/usr/bin/python3", "-m", "pip", "install", "x")),
        b.event(b.exec_("/usr/bin/python3", "-m", "http.server")),
    ),
]


@pytest.mark.parametrize(
    ("rule_id", "positive", "negative"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rule_fires_on_positive_and_not_on_close_negative(
    rule_id: str, positive: domain.Event, negative: domain.Event
) -> None:
    assert rule_id in fired(positive)
    assert rule_id not in fired(negative)


def test_drift_write_then_exec() -> None:
    write = b.event(b.opened("/tmp/payload", flags=0o101), pid=10)
    read_only = b.event(b.opened("/tmp/payload", flags=0), pid=10)
    run = b.event(b.exec_("/tmp/payload"), pid=21, ppid=10)
    assert "R0004" in fired(run, before=[write])
    assert "R0004" not in fired(run, before=[read_only])


@pytest.mark.parametrize("rule_id", ["R0001", "R0003", "R0008", "R0009", "R0010"])
def test_profile_rules_stay_silent_while_learning(rule_id: str) -> None:
    positive = next(p for r, p, _ in CASES if r == rule_id)
    assert rule_id not in fired(positive, complete=False)
    assert rules.BY_ID[rule_id].requires_complete


def test_rule_catalog_is_data_with_unique_stable_ids() -> None:
    ids = [r.rule_id for r in rules.RULES]
    assert ids == sorted(set(ids)) and ids[0] == "R0001" and len(ids) == 11
    for rule in rules.RULES:
        assert rule.technique.startswith("T") and rule.description and rule.tactic


def shell_detection(event: domain.Event) -> rules.Detection:
    profile, box = learned()
    return next(d for d in rules.evaluate(event, profile, box) if d.rule.rule_id == "R0002")


def test_alert_repeats_are_aggregated_and_resolved_alerts_reopen() -> None:
    book = AlertBook()
    profile, box = learned()
    shell = b.event(b.exec_("/bin/bash"), pid=20, ppid=10)
    for offset in range(3):
        at_event = shell._replace(at=b.T0 + offset)
        for detection in rules.evaluate(at_event, profile, box):
            book.record(detection, at_event, box.tree(at_event))
    ((alert, new),) = [c for c in book.flush(b.T0 + 5) if c[0].rule_id == "R0002"]
    assert new and alert.count == 3 and alert.last_seen == b.T0 + 2 and alert.first_seen == b.T0
    assert [p.path for p in alert.tree] == ["/app/server", "/bin/bash"]
    book.record(shell_detection(shell), shell, ())
    ((again, new),) = book.flush(b.T0 + 6)
    assert not new and again.id == alert.id and again.count == 4
    book.set_state(alert.id, AlertState.RESOLVED, "fixed", b.T0 + 7)
    later = shell._replace(at=b.T0 + 8)
    book.record(shell_detection(later), later, ())
    ((reopened, new),) = book.flush(b.T0 + 9)
    assert new and reopened.id != alert.id and reopened.count == 1


def test_resolved_alerts_are_bounded() -> None:
    book = AlertBook()
    for index in range(5):
        detection = rules.Detection(rules.BY_ID["R0011"], f"/bin/apt{index}", "apt ran", {})
        book.record(detection, b.event(b.exec_("/usr/bin/apt-get"), at=b.T0 + index), ())
    ids = [alert.id for alert, _ in book.flush(b.T0 + 10)]
    for index, alert_id in enumerate(ids[:4]):
        book.set_state(alert_id, AlertState.RESOLVED, "done", b.T0 + 20 + index)
    assert book.forget_resolved(limit=2) == ids[:2]
    assert set(book.by_id) == set(ids[2:]) and len(book.live) == 1
