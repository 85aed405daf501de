"""Each detection rule on its positive case and on a close negative case, against a profile
learned from a baseline; the shell and package-manager rules also in a new pod's container (its
init process, kubectl exec); plus the rule catalog as data (IDs unique and stable) and alert
aggregation of repeats."""

from __future__ import annotations

import pytest

from services.runtime import domain, rules, signatures, steps
from services.runtime.alerts import AlertBook, AlertState
from services.runtime.containers import ContainerState
from services.runtime.learning import Profile
from services.runtime.profiles import Context, State
from tests.runtime import builders as b

SA = "/var/run/secrets/kubernetes.io/serviceaccount/"
TOKEN = SA + "token"
NAMESPACE = SA + "namespace"
ROTATED = "/run/secrets/kubernetes.io/serviceaccount/..2026_05_01_12_00_00.123456789/token"
IRSA = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
AZURE = "/var/run/secrets/azure/tokens/azure-identity-token"
PROJECTED = "/var/run/secrets/tokens/vault-token"
BASELINE = [
    b.event(b.exec_("/app/server", "--port", "8080"), pid=10, ppid=1),
    b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=11, ppid=10),
    b.event(b.opened(TOKEN), pid=10),
    b.event(b.opened(IRSA), pid=10),
    b.event(b.opened(NAMESPACE), pid=11),
    b.event(b.flow("10.96.0.10", 53, protocol=2), pid=10),
    b.event(domain.Dns("api.stripe.com", ("52.1.1.1",)), pid=10),
    b.event(b.flow("52.1.1.1", 443), pid=10),
    b.event(domain.Capability("CAP_NET_BIND_SERVICE", 10, True, 1), pid=10),
    b.event(domain.SyscallSet(1, (0, 1, 3), ("read", "write", "close"), True, frozenset()), pid=0),
]


def learned(
    complete: bool = True, baseline: list[domain.Event] = BASELINE
) -> tuple[Profile, ContainerState]:
    profile = Profile(b.CART, "cart", "shop/cart:1", b.DIGEST, b.T0)
    box = ContainerState()
    for event in baseline:
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


def tty(exe: domain.Exec) -> domain.Exec:
    return exe._replace(stdin_tty=True)


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
    (  # a learned shell, but exec'd from outside the container (kubectl exec)
        "R0002",
        b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=40, ppid=900),
        b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=40, ppid=10),
    ),
    (  # a learned shell from its learned parent, but interactive
        "R0002",
        b.event(tty(b.exec_("/bin/sh", "-c", "/app/start.sh")), pid=40, ppid=10),
        b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=40, ppid=10),
    ),
    (  # a learned shell, but from a process never seen spawning it (the shell itself)
        "R0002",
        b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=40, ppid=11),
        b.event(b.exec_("/bin/sh", "-c", "/app/start.sh"), pid=40, ppid=10),
    ),
    ("R0003", b.event(b.opened(TOKEN), pid=30, comm="curl"), b.event(b.opened(TOKEN), pid=10)),
    (  # the shell learned reading the namespace beside the token, not the token
        "R0003",
        b.event(b.opened(TOKEN), pid=11),
        b.event(b.opened(NAMESPACE), pid=11),
    ),
    (  # the token through the volume's timestamped directory: the same file to its reader
        "R0003",
        b.event(b.opened(ROTATED), pid=30, comm="curl"),
        b.event(b.opened(ROTATED), pid=10),
    ),
    ("R0003", b.event(b.opened(IRSA), pid=30, comm="curl"), b.event(b.opened(IRSA), pid=10)),
    (  # the app reads the service-account token, not the Azure workload identity token
        "R0003",
        b.event(b.opened(AZURE), pid=10),
        b.event(b.opened(NAMESPACE), pid=10),
    ),
    (
        "R0003",
        b.event(b.opened(PROJECTED), pid=30, comm="curl"),
        b.event(b.opened("/run/secrets/db-password"), pid=30, comm="curl"),
    ),
    ("R0005", b.event(b.flow("169.254.169.254", 80)), b.event(b.flow("169.254.169.253", 80))),
    (  # what str(IPv6Address) gives for a dual-stack socket's IPv4-mapped peer
        "R0005",
        b.event(b.flow("::ffff:a9fe:a9fe", 80)),
        b.event(b.flow("::ffff:a9fe:a9fd", 80)),
    ),
    (
        "R0005",
        b.event(b.flow("::ffff:169.254.169.254", 80)),
        b.event(b.flow("::ffff:169.254.169.253", 80)),
    ),
    (
        "R0005",
        b.event(b.flow("fd00:ec2:0:0:0:0:0:254", 80)),
        b.event(b.flow("fd00:ec2::253", 80)),
    ),
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
    (
        "R0011",
        b.event(b.exec_("/usr/local/bin/npm", "install", "left-pad")),
        b.event(b.exec_("/usr/local/bin/npm", "start")),
    ),
    (
        "R0011",
        b.event(b.exec_("/usr/bin/dpkg", "-i", "/tmp/nmap.deb")),
        b.event(b.exec_("/usr/bin/dpkg", "--print-architecture")),
    ),
    (
        "R0011",
        b.event(b.exec_("/usr/local/bin/pip", "--disable-pip-version-check", "install", "x")),
        b.event(b.exec_("/usr/local/bin/pip", "--version")),
    ),
    (
        "R0011",
        b.event(b.exec_("/usr/bin/apt-get", "-o", "Debug::pkgProblemResolver=1", "remove", "x")),
        b.event(b.exec_("/usr/bin/apt-get", "-o", "Debug::pkgProblemResolver=1", "update")),
    ),
    (
        "R0011",
        b.event(b.exec_("/sbin/apk", "--no-cache", "add", "curl")),
        b.event(b.exec_("/sbin/apk", "info", "curl")),
    ),
    (
        "R0011",
        b.event(b.exec_("/bin/rpm", "-ivh", "x.rpm")),
        b.event(b.exec_("/bin/rpm", "-qi", "x")),
    ),
    (
        "R0011",
        b.event(b.exec_("/usr/local/bin/yarn", "global", "add", "x")),
        b.event(b.exec_("/usr/local/bin/yarn", "global", "list")),
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


# An image whose entrypoint is `/bin/sh /docker-entrypoint.sh`, so /bin/sh is learned: it runs a
# script, then execs the server (`exec "$@"`).
ENTRY = b.exec_("/bin/sh", "/docker-entrypoint.sh", "nginx")
NGINX = b.exec_("/usr/sbin/nginx", "-g", "daemon off;")
STARTED = [b.event(ENTRY, pid=10, ppid=1), b.event(NGINX, pid=10, ppid=1)]
ENTRYPOINT = [
    b.event(ENTRY, pid=10, ppid=1),
    b.event(b.exec_("/bin/sh", "/docker-entrypoint.d/10-listen.sh"), pid=11, ppid=10),
    b.event(domain.Exit(0), pid=11),
    b.event(NGINX, pid=10, ppid=1),
]


def in_new_pod(
    event: domain.Event, before: list[domain.Event], baseline: list[domain.Event]
) -> set[str]:
    """The rules `event` fires in a new pod's container that showed `before`, against the
    COMPLETE profile learned from `baseline` (a new digest's empty LEARNING one when empty)."""
    profile, _ = learned(bool(baseline), baseline)
    box = ContainerState()
    for earlier in before:
        box.observe(earlier)
    return {d.rule.rule_id for d in rules.evaluate(event, profile, box)}


NEW_DIGEST: list[domain.Event] = []  # nothing learned yet: the profile is LEARNING
# A server whose start the agent missed forks a child that runs a shell: the fork shows the
# server runs in the container, so its shells are not "from outside".
HEALTH_CHECK = [
    b.event(domain.Fork(501), pid=500, ppid=1),
    b.event(b.exec_("/bin/sh", "-c", "/app/healthcheck"), pid=501, ppid=500),
]
SHELLS = [
    # the profile's baseline, what the new pod did before, the shell's exec, whether R0002 fires
    (
        "kubectl exec -it",
        ENTRYPOINT,
        STARTED,
        b.event(tty(b.exec_("/bin/sh")), pid=40, ppid=900),
        True,
    ),
    (
        "kubectl exec",
        ENTRYPOINT,
        STARTED,
        b.event(b.exec_("/bin/sh", "-c", "id"), pid=40, ppid=900),
        True,
    ),
    (
        "kubectl exec while learning",
        NEW_DIGEST,
        STARTED,
        b.event(b.exec_("/bin/sh", "-c", "id"), pid=40, ppid=900),
        True,
    ),
    (
        "the server spawns sh",
        ENTRYPOINT,
        STARTED,
        b.event(b.exec_("/bin/sh", "-c", "id"), pid=41, ppid=10),
        True,
    ),
    (
        "a server started before the agent runs its learned health check",
        HEALTH_CHECK,
        [b.event(domain.Fork(502), pid=500, ppid=1)],
        b.event(b.exec_("/bin/sh", "-c", "/app/healthcheck"), pid=502, ppid=500),
        False,
    ),
    (
        "kubectl exec into a server started before the agent",
        HEALTH_CHECK,
        [b.event(domain.Fork(502), pid=500, ppid=1)],
        b.event(b.exec_("/bin/sh", "-c", "id"), pid=40, ppid=900),
        True,
    ),
    ("the entrypoint", ENTRYPOINT, [], b.event(ENTRY, pid=10, ppid=1), False),
    ("the entrypoint of a new digest", NEW_DIGEST, [], b.event(ENTRY, pid=10, ppid=1), False),
    (
        "the entrypoint through env",
        NEW_DIGEST,
        [b.event(b.exec_("/usr/bin/env", "/bin/sh", "/docker-entrypoint.sh"), pid=10, ppid=1)],
        b.event(ENTRY, pid=10, ppid=1),
        False,
    ),
    (
        "the entrypoint's learned script",
        ENTRYPOINT,
        [b.event(ENTRY, pid=10, ppid=1)],
        b.event(b.exec_("/bin/sh", "/docker-entrypoint.d/10-listen.sh"), pid=11, ppid=10),
        False,
    ),
]


@pytest.mark.parametrize(
    ("baseline", "before", "shell", "fires"), [c[1:] for c in SHELLS], ids=[c[0] for c in SHELLS]
)
def test_shell_rule_judges_how_a_shell_started_not_its_path(
    baseline: list[domain.Event], before: list[domain.Event], shell: domain.Event, fires: bool
) -> None:
    assert ("R0002" in in_new_pod(shell, before, baseline)) is fires


INSTALLS = [
    # what the new pod did before, the package manager's exec, whether R0011 fires
    ("npm ci as the entrypoint", [], b.event(b.exec_("/usr/local/bin/npm", "ci"), pid=10), False),
    (
        "npm ci exec'd by the entrypoint's sh -c",
        [b.event(b.exec_("/bin/sh", "-c", "npm ci"), pid=10)],
        b.event(b.exec_("/usr/local/bin/npm", "ci"), pid=10),
        False,
    ),
    (
        "npm ci spawned by the entrypoint",
        [b.event(b.exec_("/bin/sh", "-c", "npm ci && npm start"), pid=10)],
        b.event(b.exec_("/usr/local/bin/npm", "ci"), pid=11, ppid=10),
        True,
    ),
    (
        "apt-get install by kubectl exec",
        STARTED,
        b.event(b.exec_("/usr/bin/apt-get", "install", "-y", "nmap"), pid=40, ppid=900),
        True,
    ),
]


@pytest.mark.parametrize(
    ("before", "install", "fires"), [c[1:] for c in INSTALLS], ids=[c[0] for c in INSTALLS]
)
def test_package_changes_are_silent_only_as_the_init_process(
    before: list[domain.Event], install: domain.Event, fires: bool
) -> None:
    assert ("R0011" in in_new_pod(install, before, ENTRYPOINT)) is fires


@pytest.mark.parametrize("path", [TOKEN, ROTATED, IRSA, AZURE, PROJECTED])
def test_token_reads_are_never_collapsed_away(path: str) -> None:
    """steps.inert_open lets the collapser merge opens that no rule looks at; R0003 looks at
    every token read."""
    assert signatures.token_file(path)
    assert not steps.inert_open(path, 0, 3)


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


@pytest.mark.parametrize("source", ["monitor", "seccomp_audit"])
def test_filter_deviations_are_judged_against_a_partial_profile_too(source: str) -> None:
    """A monitor or audit filter built from a PARTIAL profile (for review) is the baseline its
    records deviate from: they raise R0010, saying the profile was PARTIAL, instead of vanishing;
    a syscall the profile holds stays silent."""
    profile, box = learned(complete=False)
    profile.state = State.PARTIAL
    outside = b.event(domain.Deviation(1, 101, "ptrace", 1, source))
    (detection,) = rules.evaluate(outside, profile, box)
    assert detection.rule.rule_id == "R0010"
    assert detection.evidence["profile_state"] == "PARTIAL"
    inside = b.event(domain.Deviation(1, 0, "read", 1, source))
    assert rules.evaluate(inside, profile, box) == []


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


def test_a_peer_known_by_name_is_known_on_its_learned_port_only() -> None:
    """A learned name's new address is the same peer on the learned port and protocol; another
    port on that name (a shell to :4444) is not; a refused try says so."""
    answer = b.event(domain.Dns("api.example.test", ("127.0.0.2",)), pid=10)
    baseline = [*BASELINE, answer, b.event(b.flow("127.0.0.2", 8080), pid=10)]
    profile, box = learned(True, baseline)
    box.observe(b.event(domain.Dns("api.example.test", ("10.9.9.9",)), pid=10))

    def r0008(flow: domain.Flow) -> list[rules.Detection]:
        found = rules.evaluate(b.event(flow, pid=10), profile, box)
        return [d for d in found if d.rule.rule_id == "R0008"]

    assert r0008(b.flow("10.9.9.9", 8080)) == []
    (other_port,) = r0008(b.flow("10.9.9.9", 4444))
    assert other_port.evidence["dns_names"] == "api.example.test"
    (refused,) = r0008(b.flow("10.9.9.9", 4444)._replace(return_value=-111))
    assert "tried to connect to" in refused.message and refused.evidence["return_value"] == "-111"
