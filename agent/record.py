"""`parallax record -- CMD`: run one command in its own local-pod cgroup with every probe attached,
from its start to its exit, and build its profile (syscalls, execs, opens, peers, DNS,
capabilities) with no service running, like SPO's `spoc record`; with a runtime address, also
ship the recording to the runtime service as one agent session (the agent's Outbox and Sender,
attributed to the local pod), so that the runtime holds a profile for it. Also the tests' probe
session.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import event_pb2 as pb

from agent.attributed import attach
from agent.attribution.pods import read_local
from agent.compact import decode_event
from agent.decode import ARCH, dns_transaction, syscall_name
from agent.localpod import REGISTRY, LocalPod, cgroup2_mount, local_pod
from agent.metrics import AgentMetrics
from agent.probes.consumer import Collector, Consumer, Record
from agent.probes.control import Control, SyscallSetRead
from agent.probes.counts import CountReport
from agent.probes.dnspairs import DnsPairs
from agent.probes.loader import EVENT_GROUPS, Group, Loader
from agent.ship.outbox import Outbox
from agent.ship.sender import Sender

NAMESPACE = "record"  # the local pods of recordings: record/<pod>
# The title of `startup_syscalls`: the syscalls seen only before the command's own exec
# completed, which are the launcher's between fork and exec (a container runtime's, in a
# container) and the execve that started the command, which enters the kernel before the exec
# is done: an execve listed there is that one, and means the command itself never execs again.
LAUNCH_ONLY = "only while launching (the launcher's, and the execve itself)"
# How a capability check made before the command's exec (the launcher's) is marked.
LAUNCH = "while launching"


@dataclass
class Profile:
    """What one recorded command did."""

    exit_code: int
    pod: str = ""
    syscalls: list[str] = field(default_factory=list)
    startup_syscalls: list[str] = field(default_factory=list)  # see LAUNCH_ONLY
    execs: list[str] = field(default_factory=list)
    opens: list[str] = field(default_factory=list)
    failed_opens: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    drops: dict[int, int] = field(default_factory=dict)
    # Events the runtime did not acknowledge (-1: not shipped to a runtime).
    unacknowledged: int = -1

    def to_json(self) -> str:
        """The profile as indented JSON."""
        return json.dumps(asdict(self), indent=2)

    def to_text(self) -> str:
        """The profile as sections of lines, for people."""
        out = [f"pod: {self.pod}", f"exit code: {self.exit_code}"]
        for title, items in (
            ("syscalls", self.syscalls),
            (LAUNCH_ONLY, self.startup_syscalls),
            ("execs", self.execs),
            ("opens", self.opens),
            ("failed opens", self.failed_opens),
            ("peers", self.peers),
            ("dns", self.dns),
            ("capabilities", self.capabilities),
        ):
            out.append(f"{title} ({len(items)}):")
            out.extend(f"  {item}" for item in items)
        if self.drops:
            out.append(f"dropped events by type: {self.drops}")
        return "\n".join(out)


class Recorder(Collector):
    """A Collector that also does what the agent's kernel source does with raw records:
    remembers each de-duplicated key's first record (for the true counts) and pairs DNS queries
    with their answers."""

    def __init__(self, counts: CountReport) -> None:
        super().__init__()
        self.counts, self.dns = counts, DnsPairs()

    def __call__(self, raw: bytes) -> None:
        self.counts.remember(raw)
        record = decode_event(raw)
        if isinstance(record, pb.Event) and record.HasField("dns_query"):
            self.add(self.dns.add(record, *dns_transaction(raw)))
        elif record is not None:
            self.add([record])

    def add(self, records: Sequence[Record]) -> None:
        """Append decoded records."""
        with self._cond:
            self.records.extend(records)
            self._cond.notify_all()


class Session:
    """Loaded probes with a running consumer; `close()` detaches everything. With `pairing`, the
    collector is a Recorder (DNS answers paired with their queries, hit counts reportable)."""

    def __init__(self, groups: Sequence[Group] = EVENT_GROUPS, *, pairing: bool = False) -> None:
        self.loader = Loader(cgroup2_mount())
        self.control = Control(self.loader)
        self.counts = CountReport(self.control)
        self.collector = Recorder(self.counts) if pairing else Collector()
        self.consumer = Consumer(self.loader, self.collector)
        for group in groups:
            self.loader.attach(group)
        self.consumer.start()

    def close(self) -> None:
        """Stop consuming and release the programs."""
        self.consumer.close()
        self.loader.close()


@contextlib.contextmanager
def session(groups: Sequence[Group] = EVENT_GROUPS, *, pairing: bool = False) -> Iterator[Session]:
    """A Session closed on exit."""
    s = Session(groups, pairing=pairing)
    try:
        yield s
    finally:
        s.close()


@dataclass(frozen=True)
class Runtime:
    """Where to ship a recording: the runtime's address, the channel credentials (None for
    plaintext), the node the recording is reported for, and how long to wait for the runtime's
    acknowledgements."""

    address: str
    credentials: grpc.ChannelCredentials | None = None
    node: str = field(default_factory=socket.gethostname)
    grace: float = 30.0


def record(
    argv: Sequence[str],
    timeout: float | None = None,
    *,
    pod: str = "",
    stdout: int | None = None,
    runtime: Runtime | None = None,
) -> Profile:
    """Run `argv` to its exit in a fresh local pod `record/<pod>` (a random name by default),
    learning and tracking it, and profile it; the command's stdout goes to `stdout` (a file
    descriptor) when given. With `runtime`, ship the recording there before the pod is gone."""
    name = pod or f"cmd-{uuid.uuid4().hex[:8]}"
    with session(pairing=True) as s, local_pod(NAMESPACE, name) as p:
        s.control.track(p.cgroup_id, running=False)  # nothing ran: its launch is seen
        s.control.learn(p.cgroup_id)
        code = p.spawn(argv, stdout=stdout).wait(timeout)
        s.consumer.stop()
        assert isinstance(s.collector, Recorder)
        s.collector.add(s.collector.dns.expire(everything=True))  # queries never answered
        profile = build_profile(s, p.cgroup_id, code)
        profile.pod = f"{NAMESPACE}/{name}"
        if runtime is not None:
            profile.unacknowledged = ship(recorded_events(s, p), s.control.drops(), runtime)
        return profile


def recorded_events(s: Session, pod: LocalPod) -> list[pb.Event]:
    """The pod's events as the agent ships them: attributed to the local pod, then its syscall
    set (seen from the start: the cgroup learned before its first process) and the repeat
    counts of its de-duplicated events."""
    events = s.collector.events(pod.cgroup_id)
    learned = s.control.syscall_sets().get(pod.cgroup_id)
    if learned is not None and learned.numbers:
        events.append(syscall_set_event(learned, start_observed=True))
    events.extend(s.counts.report({pod.cgroup_id}))
    found = read_local(REGISTRY, pod.cgroup_id, (pod.namespace, pod.pod))
    reason = pb.UNATTRIBUTED_REASON_METADATA_UNAVAILABLE
    return [attach(e, found if found is not None else reason) for e in events]


def syscall_set_event(read: SyscallSetRead, *, start_observed: bool) -> pb.Event:
    """A SyscallSet event of a cgroup's cumulative set, as agent.probes.source reports it."""
    now = Timestamp()
    now.GetCurrentTime()
    numbers = sorted(read.numbers)
    event = pb.Event(cgroup_id=read.cgroup_id, event_time=now)
    event.syscall_set.arch = ARCH
    event.syscall_set.syscall_numbers.extend(numbers)
    event.syscall_set.syscall_names.extend(syscall_name(n) for n in numbers)
    event.syscall_set.start_observed = start_observed
    event.syscall_set.runtime_startup_syscall_numbers.extend(sorted(read.startup_only))
    event.syscall_set.period_end_time.CopyFrom(now)
    return event


def ship(events: list[pb.Event], drops: dict[int, int], runtime: Runtime) -> int:
    """Send `events` and the ring's drop counters to the runtime as one agent session; returns
    how many events it did not acknowledge within `runtime.grace` seconds."""
    from agent.__main__ import header  # the agent's session header, shared with the recorder
    from servicekit.channels import connect

    outbox = Outbox(header(f"record-{runtime.node}", runtime.node), batch_latency=0.05)
    ring = blind_spot_pb2.DROP_SOURCE_RING_BUFFER
    with connect(runtime.address, credentials=runtime.credentials) as channel:
        sender = Sender(outbox, channel, AgentMetrics(), ack_timeout=min(runtime.grace, 10.0))
        sender.submit(events)
        sender.set_drops({(kind, ring): n for kind, n in drops.items()})
        sender.start()
        sender.stop(runtime.grace)
    return outbox.buffered


def build_profile(s: Session, cgroup_id: int, exit_code: int) -> Profile:
    """The profile of one cgroup from a Session's syscall set and collected events."""
    p = Profile(exit_code=exit_code, drops=s.control.drops())
    sets = s.control.syscall_sets().get(cgroup_id)
    if sets is not None:
        p.syscalls = sorted({syscall_name(n) or str(n) for n in sets.numbers})
        p.startup_syscalls = sorted({syscall_name(n) or str(n) for n in sets.startup_only})
    for e in s.collector.events(cgroup_id):
        kind = e.WhichOneof("payload")
        if kind == "exec":
            p.execs.append(f"{e.pid} (parent {e.ppid}, uid {e.uid}): {' '.join(e.exec.argv)}")
        elif kind == "file_open":
            target = p.failed_opens if e.file_open.return_value < 0 else p.opens
            target.append(
                f"{e.file_open.path} flags={e.file_open.flags:#o} ret={e.file_open.return_value}"
            )
        elif kind == "network_flow":
            f = e.network_flow
            peer = f"{f.remote_address}:{f.remote_port}"
            local = f" on {f.local_address or '*'}:{f.local_port}" if f.local_port else ""
            p.peers.append(f"{_DIRECTIONS.get(f.direction, '?')} {peer}{local}")
        elif kind == "dns_query" and e.dns_query.rcode >= 0:
            q = e.dns_query
            p.dns.append(
                f"{q.query_name} {q.query_type} -> {', '.join(q.answer_addresses) or q.rcode}"
            )
        elif kind == "capability_use":
            c = e.capability_use
            when = f" ({LAUNCH})" if c.runtime_startup else ""
            p.capabilities.append(
                f"{c.capability_name} {'allowed' if c.allowed else 'denied'}{when}"
            )
    return p


_DIRECTIONS = {1: "connect", 2: "accept", 3: "udp-send"}
