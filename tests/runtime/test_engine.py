"""Ingest and the learning lifecycle through the engine on a real SQLite file, with an injected
clock: dedupe of resent batches, rejection of garbled batches with nothing stored, drop counters
per node, LEARNING to COMPLETE/PARTIAL on the clock, and a new image digest starting a new
profile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import blind_spot_pb2, event_pb2

from servicekit.errors import InvalidArgument
from servicekit.storage import engine as make_engine
from services.runtime import wire
from services.runtime.engine import Engine
from services.runtime.profiles import Category, State
from services.runtime.store import RuntimeStore
from tests.runtime import builders as b


class Clock:
    def __init__(self) -> None:
        self.now = b.T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RuntimeStore]:
    bound = make_engine(f"sqlite:///{tmp_path / 'runtime.db'}")
    yield RuntimeStore(bound)
    bound.dispose()


@pytest.fixture
def core(store: RuntimeStore, clock: Clock) -> Engine:
    return Engine(store, clock, default_window=3600)


def ingest(core: Engine, request: object) -> bool:
    return core.ingest(wire.batch(request, core.clock()))  # type: ignore[arg-type]


def profile_of(core: Engine, container: str = "cart") -> object:
    return core.current[(b.CART, container)]


def test_resent_batch_is_a_duplicate_and_changes_nothing(core: Engine, store: RuntimeStore) -> None:
    request = b.batch(1, [b.wire_exec("/app/server"), b.wire_open("/etc/app.conf")])
    assert ingest(core, request) is False
    assert ingest(core, request) is True
    profile = core.current[(b.CART, "cart")]
    assert profile.events_received == 2
    assert ingest(Engine(store, core.clock), request) is True  # also after a restart
    reloaded = Engine(store, core.clock)
    assert reloaded.current[(b.CART, "cart")].events_received == 2
    assert reloaded.nodes["n1"].events_received == 2


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (b.batch(1, [b.wire_exec("/bin/x")], session=""), "session_id"),
        (b.batch(0, [b.wire_exec("/bin/x")]), "sequence"),
        (b.batch(1, [b.wire_event()]), "no payload"),
        (b.batch(1, [b.wire_exec("/bin/x"), b.wire_exec("")]), "events[1].exec: path"),
        (b.batch(1, [b.wire_flow("not-an-ip", 80)]), "not an IP address"),
        (b.batch(1, [b.wire_flow("10.0.0.1", 70000)]), "ports"),
        (b.batch(1, [b.wire_exec("/bin/x", pid=99_999_999)]), "pid"),
        (b.batch(1, [b.wire_exec("/bin/x", at=5.0)]), "absurd"),
        (b.batch(1, [b.wire_exec("/bin/x", *["a"] * 65)]), "argv"),
        (b.batch(1, [b.wire_syscalls([3, 1])]), "ascending"),
        (b.batch(1, [b.wire_exec("/bin/x")] * 10_001), "limit is 10000"),
    ],
    ids=[
        "no-session",
        "sequence-0",
        "no-payload",
        "empty-path",
        "bad-ip",
        "port",
        "pid",
        "time",
        "argv",
        "syscalls-order",
        "too-many",
    ],
)
def test_garbled_batch_is_rejected_and_nothing_is_stored(
    core: Engine, store: RuntimeStore, request_: object, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=r"nothing stored") as caught:
        ingest(core, request_)
    assert message in str(caught.value)
    assert core.profiles == {} and core.nodes == {}
    assert store.load().profiles == []
    assert store.sequences(b.batch(1, []) and wire.batch(b.batch(1, []), 0).key) == set()


def test_oversized_batch_is_rejected(core: Engine) -> None:
    big = [b.wire_exec("/bin/" + "x" * 4000, *["y" * 256] * 60)] * 300
    with pytest.raises(InvalidArgument, match="bytes encoded"):
        ingest(core, b.batch(1, big))


def test_drop_counters_and_unattributed_are_kept_per_node(core: Engine, clock: Clock) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")], drop_counters=b.drops(5)))
    unknown = b.wire_open("/x")
    unknown.attribution.Clear()
    unknown.attribution.unattributed_reason = 1
    ingest(core, b.batch(2, [unknown], drop_counters=b.drops(7)))
    ingest(core, b.batch(1, [], session="s2", drop_counters=b.drops(2)))
    node = core.nodes["n1"]
    assert node.drops() == {(6, 1): 9}
    assert node.unattributed == {(6, 1): 1}
    profile = core.current[(b.CART, "cart")]
    assert (profile.events_dropped, profile.unattributed) == (9, 1)


def test_learning_becomes_complete_after_a_quiet_window(core: Engine, clock: Clock) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server"), b.wire_syscalls([0, 1, 3])]))
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.LEARNING
    b.watch(core, 3000)
    ingest(core, b.batch(2, [b.wire_open("/etc/new.conf")]))  # new item restarts the window
    assert b.watch(core, 3000) == []
    assert b.watch(core, 601) == [profile]
    assert profile.state is State.COMPLETE
    assert "no new behaviour in 3600s watched" in profile.reason
    assert Engine(core.store, clock).current[(b.CART, "cart")].state is State.COMPLETE


def test_partial_when_the_start_was_not_observed(core: Engine, clock: Clock) -> None:
    ingest(core, b.batch(1, [b.wire_syscalls([0, 1], start_observed=False)]))
    b.watch(core, 3601)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.PARTIAL
    assert "container start not observed" in profile.reason
    assert "start-up syscalls were not recorded on node n1" in profile.reason


def test_partial_when_the_first_event_is_not_an_exec(core: Engine, clock: Clock) -> None:
    ingest(core, b.batch(1, [b.wire_open("/etc/passwd"), b.wire_exec("/app/server")]))
    b.watch(core, 3601)
    assert core.current[(b.CART, "cart")].state is State.PARTIAL


def test_new_image_digest_starts_a_new_profile_and_keeps_the_old(
    core: Engine, clock: Clock
) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    old = core.current[(b.CART, "cart")]
    b.watch(core, 3601)
    assert old.state is State.COMPLETE
    ingest(core, b.batch(2, [b.wire_exec("/app/server2", digest="sha256:" + "b" * 64)]))
    new = core.current[(b.CART, "cart")]
    assert new is not old and new.state is State.LEARNING and new.current
    assert not old.current and old.state is State.COMPLETE
    reloaded = Engine(core.store, clock)
    assert len(reloaded.profiles) == 2


def test_union_across_replicas_counts_replicas_and_collapses_paths(core: Engine) -> None:
    events = [
        b.wire_exec("/app/server", pod="cart-1"),
        b.wire_exec("/app/server", pod="cart-2"),
        b.wire_open("/proc/1234/stat", pod="cart-1"),
        b.wire_open("/proc/99/stat", pod="cart-2"),
        b.wire_open("/etc/missing", return_value=-2, pod="cart-1"),
    ]
    ingest(core, b.batch(1, events))
    profile = core.current[(b.CART, "cart")]
    files = profile.items[Category.FILE]
    assert list(files) == [("/proc/*/stat",)] and len(files[("/proc/*/stat",)].pods) == 2
    assert profile.items[Category.FAILED_FILE][("/etc/missing",)].errnos == {2}
    assert len(profile.replicas) == 2


def test_set_learning_restarts_the_window(core: Engine, clock: Clock) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    b.watch(core, 3601)
    record = core.set_learning(b.CART, "", True, 60.0)
    profile = core.current[(b.CART, "cart")]
    assert record.learning_enabled and profile.state is State.LEARNING and profile.window == 60.0
    b.watch(core, 61)
    assert profile.state is State.COMPLETE


def test_a_silent_agent_cannot_make_a_profile_complete(core: Engine, clock: Clock) -> None:
    """Only watched time counts: with the node's agent silent, the window does not pass; what
    its backlog brings when it reconnects is learned, not alerted on."""
    ingest(core, b.batch(1, [b.wire_exec("/app/server", pid=100)]))
    profile = core.current[(b.CART, "cart")]
    clock.now += 3601
    assert core.tick() == [] and profile.state is State.LEARNING
    assert profile.coverage(clock.now).watched == pytest.approx(150.0)  # nodes.SILENT_AFTER
    backlog = [b.wire_exec("/app/migrate", pid=101, at=clock.now - 1800)]
    ingest(core, b.batch(2, backlog))  # the agent is back, with what it buffered meanwhile
    assert profile.state is State.LEARNING and core.alerts.live == {}
    assert any(key[0] == "/app/migrate" for key in profile.items[Category.EXEC])
    assert b.watch(core, 3601) == [profile] and profile.state is State.COMPLETE
    reloaded = Engine(core.store, clock).current[(b.CART, "cart")]
    assert reloaded.watched == pytest.approx(profile.watched)


def test_observation_gaps_while_learning_make_the_profile_partial(
    core: Engine, clock: Clock
) -> None:
    gap = blind_spot_pb2.EventGap(
        event_type=6,
        reason=blind_spot_pb2.GAP_REASON_DISCONNECTED,
        start_time=b.stamp(b.T0),
        detail="discarded 50000 events while the runtime was unreachable",
    )
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    ingest(core, b.batch(2, [], gaps=[gap]))
    b.watch(core, 3601)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.PARTIAL
    assert "1 observation gaps" in profile.reason and "discarded 50000 events" in profile.reason
    assert profile.coverage(clock.now).gaps == 1


def test_a_restart_forgets_the_blind_spots_of_the_previous_window(
    core: Engine, clock: Clock
) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")], drop_counters=b.drops(3)))
    b.watch(core, 3601)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.PARTIAL and "3 events dropped" in profile.reason
    core.set_learning(b.CART, "", True, None)
    assert (profile.events_dropped, profile.gaps, profile.watched) == (0, 0, 0.0)
    b.watch(core, 3601)
    assert profile.state is State.COMPLETE


def test_complete_says_how_many_events_on_its_nodes_were_unattributed(
    core: Engine, clock: Clock
) -> None:
    unknown = b.wire_exec("/bin/sh")
    unknown.attribution.Clear()
    unknown.attribution.unattributed_reason = 1
    ingest(core, b.batch(1, [b.wire_exec("/app/server"), unknown, unknown]))
    b.watch(core, 3601)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.COMPLETE
    assert "2 events on its nodes were not attributed to any pod" in profile.reason


def test_the_agents_cgroup_verdict_beats_a_first_exec(core: Engine, clock: Clock) -> None:
    """A liveness probe exec'd into a container that ran before the agent looks like an
    entrypoint; the agent's cgroup_start says the cgroup existed, so the start was missed."""
    probe = b.wire_exec("/bin/grpc_health_probe", pid=48213)
    probe.attribution.cgroup_start = event_pb2.CGROUP_START_MISSED
    ingest(core, b.batch(1, [probe]))
    b.watch(core, 3601)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.PARTIAL
    assert "cgroup existed before the agent watched node n1" in profile.reason


def test_a_container_restarted_in_a_new_cgroup_is_the_one_agents_watch(core: Engine) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    restarted = b.wire_exec("/app/server", pid=300)
    restarted.cgroup_id = 2000  # same pod, its container restarted
    ingest(core, b.batch(2, [restarted]))
    profile = core.current[(b.CART, "cart")]
    (replica,) = profile.replicas.values()
    assert replica.cgroup_id == 2000 and replica.start_observed


def test_two_agents_on_a_node_taking_turns_do_not_recount_drops(core: Engine) -> None:
    """`parallax record --runtime` ships as its own agent next to the node's: each agent's
    cumulative counters are compared with its own session's, and survive a restart."""
    ingest(core, b.batch(1, [], drop_counters=b.drops(5)))
    recorder = b.batch(1, [], session="rec-1", drop_counters=b.drops(2))
    recorder.agent_id = "record-n1"
    ingest(core, recorder)
    ingest(core, b.batch(2, [], drop_counters=b.drops(6)))
    again = b.batch(2, [], session="rec-1", drop_counters=b.drops(3))
    again.agent_id = "record-n1"
    ingest(core, again)
    assert core.nodes["n1"].drops() == {(6, 1): 9}
    assert Engine(core.store, core.clock).nodes["n1"].drops() == {(6, 1): 9}


def test_capability_checks_of_the_container_runtime_are_marked_and_never_alerted(
    core: Engine,
) -> None:
    def check(startup: bool, at: float) -> event_pb2.Event:
        cap = event_pb2.CapabilityUse(
            capability_name="CAP_SYS_ADMIN",
            capability_number=21,
            allowed=True,
            count=1,
            runtime_startup=startup,
        )
        return b.wire_event(at=at, capability_use=cap)

    ingest(core, b.batch(1, [b.wire_exec("/app/server"), check(True, b.T0)]))
    profile = core.current[(b.CART, "cart")]
    (item,) = profile.items[Category.CAPABILITY].values()
    assert item.flags == 1  # only the runtime's set-up checked it
    b.watch(core, 3601)
    assert profile.state is State.COMPLETE
    other = b.wire_event(
        pod="cart-2", at=core.clock.now, capability_use=check(True, 0).capability_use
    )
    other.attribution.pod_uid = "uid-cart-2"
    ingest(core, b.batch(100, [other]))  # a new replica's set-up after COMPLETE: no R0009
    assert not [a for a in core.alerts.live.values() if a.rule_id == "R0009"]


def test_after_a_restart_an_empty_process_table_is_no_container_start(
    core: Engine, clock: Clock
) -> None:
    """The runtime's process tables live in memory: after a restart, the first exec seen in a
    known container is not taken for its entrypoint, so package installs and kubectl exec
    shells are still caught."""
    ingest(core, b.batch(1, [b.wire_exec("/app/server", pid=10)]))
    b.watch(core, 3601)
    restarted = Engine(core.store, clock, default_window=3600)
    install = b.wire_exec("/usr/bin/dpkg", "-i", "x.deb", pid=50, ppid=900, at=clock.now)
    shell = b.wire_exec("/bin/sh", "-c", "id", pid=51, ppid=901, at=clock.now)
    restarted.ingest(wire.batch(b.batch(200, [install, shell]), clock.now))
    fired = {a.rule_id: a for a in restarted.alerts.live.values()}
    assert {"R0011", "R0002"} <= set(fired)
    unexpected = {
        a.evidence["path"]: a for a in restarted.alerts.live.values() if a.rule_id == "R0001"
    }
    assert unexpected["/usr/bin/dpkg"].evidence["parent"] == "pid 900 (not seen in the container)"


def test_opting_out_ends_learning_as_partial_never_complete(core: Engine, clock: Clock) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    b.watch(core, 600)
    core.set_learning(b.CART, "", False, None)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.PARTIAL and "stopped by the operator" in profile.reason
    assert "600s of 3600s watched" in profile.reason
    ingest(core, b.batch(2, [b.wire_exec("/usr/bin/id", pid=300, at=clock.now)]))
    assert not any(key[0] == "/usr/bin/id" for key in profile.items[Category.EXEC])
    b.watch(core, 3601)
    assert profile.state is State.PARTIAL  # the clock does not complete it later
    assert Engine(core.store, clock).current[(b.CART, "cart")].state is State.PARTIAL


def test_an_agent_restart_is_a_gap_and_its_blind_window_makes_learning_partial(
    core: Engine, clock: Clock
) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    clock.now += 4  # the agent is killed and comes back with a new session
    ingest(core, b.batch(1, [], session="s2"))
    (gap,) = core.nodes["n1"].gaps
    assert gap.reason == 1 and (gap.start, gap.end) == (b.T0, b.T0 + 4)
    assert "agent agent-n1 restarted (session s1 -> s2)" in gap.detail
    b.watch(core, 3601)
    profile = core.current[(b.CART, "cart")]
    assert profile.state is State.PARTIAL and "restarted" in profile.reason


def test_a_superseded_profile_stops_learning(core: Engine) -> None:
    ingest(core, b.batch(1, [b.wire_exec("/app/server")]))
    old = core.current[(b.CART, "cart")]
    ingest(core, b.batch(2, [b.wire_exec("/app/server", digest="sha256:" + "b" * 64)]))
    assert not old.current and old.state is State.PARTIAL
    assert "superseded by image digest sha256:bbbb" in old.reason
