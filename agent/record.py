"""`parallax record -- CMD`: run one command in its own local-pod cgroup with every probe attached,
from its start to its exit, and build its profile (syscalls, execs, opens, peers, DNS,
capabilities) with no service running, like SPO's `spoc record`. Also the tests' probe session.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from agent.decode import syscall_name
from agent.localpod import cgroup2_mount, local_pod
from agent.probes.consumer import Collector, Consumer
from agent.probes.control import Control
from agent.probes.loader import EVENT_GROUPS, Group, Loader


@dataclass
class Profile:
    """What one recorded command did."""

    exit_code: int
    syscalls: list[str] = field(default_factory=list)
    startup_syscalls: list[str] = field(default_factory=list)
    execs: list[str] = field(default_factory=list)
    opens: list[str] = field(default_factory=list)
    failed_opens: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    drops: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The profile as indented JSON."""
        return json.dumps(asdict(self), indent=2)

    def to_text(self) -> str:
        """The profile as sections of lines, for people."""
        out = [f"exit code: {self.exit_code}"]
        for title, items in (
            ("syscalls", self.syscalls),
            ("runtime start-up only", self.startup_syscalls),
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


class Session:
    """Loaded probes with a running consumer; `close()` detaches everything."""

    def __init__(self, groups: Sequence[Group] = EVENT_GROUPS) -> None:
        self.loader = Loader(cgroup2_mount())
        self.control = Control(self.loader)
        self.collector = Collector()
        self.consumer = Consumer(self.loader, self.collector)
        for group in groups:
            self.loader.attach(group)
        self.consumer.start()

    def close(self) -> None:
        """Stop consuming and release the programs."""
        self.consumer.close()
        self.loader.close()


@contextlib.contextmanager
def session(groups: Sequence[Group] = EVENT_GROUPS) -> Iterator[Session]:
    """A Session closed on exit."""
    s = Session(groups)
    try:
        yield s
    finally:
        s.close()


def record(argv: Sequence[str], timeout: float | None = None) -> Profile:
    """Run `argv` to its exit in a fresh cgroup, learning and tracking it, and profile it."""
    with session() as s, local_pod("record", f"cmd-{uuid.uuid4().hex[:8]}") as pod:
        s.control.track(pod.cgroup_id)
        s.control.learn(pod.cgroup_id)
        proc = pod.spawn(argv)
        code = proc.wait(timeout)
        s.consumer.stop()
        return build_profile(s, pod.cgroup_id, code)


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
            local = f" on {f.local_address}:{f.local_port}" if f.local_port else ""
            p.peers.append(f"{_DIRECTIONS.get(f.direction, '?')} {peer}{local}")
        elif kind == "dns_query" and e.dns_query.rcode >= 0:
            q = e.dns_query
            p.dns.append(
                f"{q.query_name} {q.query_type} -> {', '.join(q.answer_addresses) or q.rcode}"
            )
        elif kind == "capability_use":
            c = e.capability_use
            p.capabilities.append(f"{c.capability_name} {'allowed' if c.allowed else 'denied'}")
    return p


_DIRECTIONS = {1: "connect", 2: "accept", 3: "udp-send"}
