"""The runtime service's vocabulary: event batches as the agents report them, workload and
container identities, and the limits a batch must respect. Pure: the servicer's wire module
builds these from protos; the profile, rule and alert modules consume them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_PATH_BYTES = 4096
MAX_ARGS = 64
MAX_ARG_BYTES = 256
MAX_SYSCALL_NUMBER = 1023
MAX_PID = 4_194_304
MAX_COUNT = 1 << 40
MAX_NAME = 253
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "tcsh", "csh", "fish"})


class Severity(enum.IntEnum):
    """Alert severity, in the order and with the numbers of parallax.type.v1.Severity."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Workload(NamedTuple):
    """A workload: namespace plus owner kind and name, e.g. shop/Deployment/cart."""

    namespace: str
    kind: str
    name: str

    @property
    def path(self) -> str:
        """Return "{namespace}/{kind}/{name}", the workload part of resource names."""
        return f"{self.namespace}/{self.kind}/{self.name}"


CGROUP_START_OBSERVED, CGROUP_START_MISSED = 1, 2  # the contract's CgroupStart


class Origin(NamedTuple):
    """Who caused an event: the workload, pod and container, on which node."""

    workload: Workload
    pod: str
    container: str
    pod_uid: str
    container_id: str
    image: str
    image_digest: str
    node: str
    cgroup_id: int
    start: int = 0  # the agent's CgroupStart verdict: 0 unspecified, 1 observed, 2 missed


class Exec(NamedTuple):
    """An execve: the binary path, its arguments and the new process's stdio kinds."""

    path: str
    argv: tuple[str, ...]
    euid: int
    return_value: int
    stdin_socket: bool
    stdout_socket: bool
    stdin_tty: bool


class Fork(NamedTuple):
    """A new process; the event's pid is the parent."""

    child_pid: int


class Exit(NamedTuple):
    """The end of the event's process."""

    code: int


class FileOpen(NamedTuple):
    """An open(2); return_value is the fd or the negative errno."""

    path: str
    flags: int
    return_value: int
    hits: int


EPHEMERAL_START = 32768  # Linux's default ip_local_port_range starts here
UDP_SEND = 3  # FlowDirection UDP_SEND
ACCEPT = 2  # FlowDirection ACCEPT: the local port is the container's own, the remote ephemeral


class Flow(NamedTuple):
    """A connection or datagram, seen from the workload. The ephemeral side is not behaviour
    and is not kept: `local_port` is 0 on outbound flows, `remote_port` is 0 on accepted ones."""

    direction: int
    protocol: int
    remote_address: str
    remote_port: int
    local_port: int
    return_value: int
    hits: int


class Dns(NamedTuple):
    """A DNS query and the addresses answered."""

    name: str
    addresses: tuple[str, ...]


class Capability(NamedTuple):
    """A capability check made by the kernel."""

    name: str
    number: int
    allowed: bool
    hits: int
    startup: bool = False  # checked before the container's first exec (the runtime's set-up)


class SyscallSet(NamedTuple):
    """The syscalls a container used in a period (learning mode)."""

    arch: int
    numbers: tuple[int, ...]
    names: tuple[str, ...]
    start_observed: bool
    startup: frozenset[int]


class Deviation(NamedTuple):
    """A syscall outside the learned set (monitor mode or a seccomp audit record)."""

    arch: int
    number: int
    name: str
    hits: int
    source: str


Payload = Exec | Fork | Exit | FileOpen | Flow | Dns | Capability | SyscallSet | Deviation


class Event(NamedTuple):
    """One attributed observation; `at` is wall-clock seconds since the epoch."""

    at: float
    origin: Origin
    pid: int
    ppid: int
    uid: int
    comm: str
    payload: Payload


# The NamedTuples built for most events (Event, Fork, Exit, FileOpen, and containers.Process) are
# built the way their own _make builds them, without calling the generated __new__: an
# interpreted function whose frame costs more than the tuple.
TUPLE_NEW: Final = tuple.__new__


def fork(child_pid: int) -> Fork:
    """Return Fork(child_pid)."""
    return TUPLE_NEW(Fork, (child_pid,))  # type: ignore[no-any-return]


def exit_(code: int) -> Exit:
    """Return Exit(code)."""
    return TUPLE_NEW(Exit, (code,))  # type: ignore[no-any-return]


def file_open(path: str, flags: int, return_value: int, hits: int) -> FileOpen:
    """Return FileOpen(path, flags, return_value, hits)."""
    return TUPLE_NEW(FileOpen, (path, flags, return_value, hits))  # type: ignore[no-any-return]


def event(  # noqa: PLR0917 - Event's own fields, in its order
    at: float, origin: Origin, pid: int, ppid: int, uid: int, comm: str, payload: Payload
) -> Event:
    """Return Event(at, origin, pid, ppid, uid, comm, payload)."""
    return TUPLE_NEW(Event, (at, origin, pid, ppid, uid, comm, payload))  # type: ignore[no-any-return]


class BatchKey(NamedTuple):
    """What makes a batch unique: resends keep all four."""

    agent_id: str
    boot_id: str
    session_id: str
    sequence: int


@dataclass(frozen=True)
class Gap:
    """A period in which the agent did not observe some event types."""

    event_type: int
    reason: int
    start: float
    end: float | None
    detail: str


@dataclass(frozen=True)
class NodeReport:
    """What a batch says about its node besides events: identity and blind spots."""

    node: str
    agent_id: str
    agent_version: str
    kernel_release: str
    arch: int
    session_id: str
    drops: dict[tuple[int, int], int]
    unattributed: dict[tuple[int, int], int]
    gaps: tuple[Gap, ...]


class Step:
    """One event standing for `count` events of its batch (itself included) that rules and
    profiles cannot tell apart; `at` is the first of their times and `last` the latest (see
    steps.py). `base` is the event but maybe at another time (a translation kept from an
    earlier batch); `event`, the event at `at`, is built only when asked for: a step the engine
    only counts (a repeat that changed nothing before) never needs it."""

    __slots__ = ("at", "base", "count", "last", "memo")

    def __init__(self, base: Event, at: float, last: float, memo: Any = None) -> None:
        self.base = base
        self.at = at
        self.count = 1
        self.last = last
        self.memo = memo  # where the engine notes that applying it changed nothing (steps.Plan)

    @property
    def event(self) -> Event:
        """The step's first event: `base` at time `at`."""
        base = self.base
        if base.at != self.at:
            base = self.base = event(
                self.at, base.origin, base.pid, base.ppid, base.uid, base.comm, base.payload
            )
        return base


@dataclass(frozen=True)
class Batch:
    """One validated batch from one agent session: its attributed events collapsed into steps,
    in order, and how many events it carried (unattributed ones included)."""

    key: BatchKey
    report: NodeReport
    steps: tuple[Step, ...]
    event_count: int


def is_shell(path: str) -> bool:
    """Return True when `path` names a command shell (by its base name)."""
    return path.rsplit("/", 1)[-1] in SHELLS


def container_path(origin: Origin) -> str:
    """Return "{workload}/containers/{container}", the container part of resource names."""
    return f"{origin.workload.path}/containers/{origin.container}"
