"""DNS query/answer pairing in the agent: one event per answered query, unanswered queries after
the timeout or when the table is full, and answers without a held query passed through."""

from __future__ import annotations

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.probes.dnspairs import DnsPairs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _dns(
    name: str, *, cgroup: int = 7, rcode: int = -1, addresses: tuple[str, ...] = ()
) -> pb.Event:
    event = pb.Event(cgroup_id=cgroup)
    event.dns_query.query_name, event.dns_query.query_type = name, "A"
    event.dns_query.rcode = rcode
    event.dns_query.answer_addresses.extend(addresses)
    event.dns_query.server_address = "127.0.0.1"
    return event


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_query_and_answer_become_one_event(clock: Clock) -> None:
    pairs = DnsPairs(clock=clock)
    query = _dns("api.example.com")
    query.pid, query.comm = 42, "curl"
    assert pairs.add(query, 0x1234, answer=False) == []
    [paired] = pairs.add(_dns("api.example.com", rcode=0, addresses=("10.0.0.9",)), 0x1234, True)
    assert paired.dns_query.rcode == 0
    assert list(paired.dns_query.answer_addresses) == ["10.0.0.9"]
    assert (paired.pid, paired.comm) == (42, "curl")
    assert pairs.waiting == 0 and pairs.paired == 1 and pairs.expire(everything=True) == []


@pytest.mark.parametrize(
    ("transaction", "cgroup", "name"),
    [(0x9999, 7, "api.example.com"), (0x1234, 8, "api.example.com"), (0x1234, 7, "other.com")],
    ids=["other-transaction", "other-cgroup", "other-name"],
)
def test_answer_pairs_only_its_own_query(
    clock: Clock, transaction: int, cgroup: int, name: str
) -> None:
    pairs = DnsPairs(clock=clock)
    pairs.add(_dns("api.example.com"), 0x1234, answer=False)
    [alone] = pairs.add(_dns(name, cgroup=cgroup, rcode=0), transaction, answer=True)
    assert alone.dns_query.query_name == name
    assert pairs.waiting == 1 and pairs.paired == 0


def test_unanswered_query_leaves_after_the_timeout(clock: Clock) -> None:
    pairs = DnsPairs(timeout=2.0, clock=clock)
    pairs.add(_dns("slow.example.com"), 1, answer=False)
    pairs.add(_dns("slow.example.com"), 1, answer=False)  # a retransmission
    clock.now += 1.9
    assert pairs.expire() == []
    clock.now += 0.2
    [late] = pairs.expire()
    assert late.dns_query.rcode == -1 and pairs.unanswered == 1 and pairs.waiting == 0


def test_full_table_releases_the_oldest(clock: Clock) -> None:
    pairs = DnsPairs(limit=2, clock=clock)
    assert pairs.add(_dns("a.com"), 1, answer=False) == []
    assert pairs.add(_dns("b.com"), 2, answer=False) == []
    [oldest] = pairs.add(_dns("c.com"), 3, answer=False)
    assert oldest.dns_query.query_name == "a.com" and pairs.waiting == 2
