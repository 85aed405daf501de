"""Behaviour profiles: the union over replicas of what one container of a workload did for one
image digest, item by item with first-seen time and replica count, and the learning lifecycle
(LEARNING, then COMPLETE or PARTIAL). Pure and in memory; the engine feeds events and the store
persists the items marked dirty."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple

from services.runtime import domain
from services.runtime.patterns import argv_pattern, collapse_path

MAX_TAGS = 16
MAX_ADDRESSES = 32
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC


class Category(enum.Enum):
    """The kinds of items a profile holds."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs Python code

    SYSCALL = "syscall"
    EXEC = "exec"
    FILE = "file"
    FAILED_FILE = "failed_file"
    PEER = "peer"
    DNS = "dns"
    CAPABILITY = "capability"
    USER = "user"


class State(enum.Enum):
    """The learning lifecycle of a profile."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs Python code

    LEARNING = "learning"
    COMPLETE = "complete"
    PARTIAL = "partial"


ItemKey = tuple[str | int, ...]


class Item:
    """One item of a profile; `flags` holds open flags (files) or the runtime-startup bit
    (syscalls), `tags` the executables, parents, DNS names or addresses, bounded."""

    __slots__ = ("allowed", "denied", "errnos", "first_seen", "flags", "label", "pods", "tags")

    def __init__(self, first_seen: float, label: str = "") -> None:
        self.first_seen = first_seen
        self.label = label
        self.pods: set[str] = set()
        self.tags: set[str] = set()
        self.errnos: set[int] = set()
        self.flags = 0
        self.allowed = 0
        self.denied = 0


class Context(NamedTuple):
    """What the engine knows around an event: the acting and parent executables, and the DNS
    names that resolved to a flow's remote address in this container."""

    exe: str
    parent_exe: str
    dns_names: tuple[str, ...]


class Replica:
    """One pod's container contributing to a profile, and whether its start was observed."""

    __slots__ = ("cgroup_id", "container_id", "node", "pod", "reason", "restored", "start_observed")

    def __init__(self, origin: domain.Origin) -> None:
        self.pod = origin.pod
        self.node = origin.node
        self.cgroup_id = origin.cgroup_id
        self.container_id = origin.container_id
        self.start_observed: bool | None = None
        self.reason = ""
        self.restored = False  # read back from the store: seen before this process started

    @classmethod
    def restore(
        cls,
        pod: str,
        node: str,
        *,
        cgroup_id: int,
        container_id: str,
        start_observed: bool | None,
        reason: str,
    ) -> Replica:
        """A replica as stored (see codec.py)."""
        origin = domain.Origin(
            domain.Workload("", "", ""), pod, "", "", container_id, "", "", node, cgroup_id
        )
        replica = cls(origin)
        replica.start_observed, replica.reason = start_observed, reason
        replica.restored = True
        return replica

    def observe_first(self, event: domain.Event) -> None:
        """Decide whether the replica's start was seen: the agent's verdict on its cgroup when
        it gives one, else inferred from the first event (an exec is taken as the container's
        entrypoint; a liveness probe's exec into a running container looks the same, which is
        why agents say)."""
        payload = event.payload
        start = event.origin.start
        if start:
            self.start_observed = start == domain.CGROUP_START_OBSERVED
            self.reason = (
                f"pod {self.pod}: cgroup creation seen on node {self.node}"
                if self.start_observed
                else f"pod {self.pod}: cgroup existed before the agent watched node {self.node}"
            )
        elif isinstance(payload, domain.SyscallSet):
            self.note_syscall_set(payload)
        elif isinstance(payload, domain.Exec):
            self.start_observed = True
            self.reason = f"pod {self.pod}: first event was the exec of {payload.path} (inferred)"
        else:
            self.start_observed = False
            self.reason = f"pod {self.pod} on node {self.node}: first event was not an exec"

    def note_syscall_set(self, payload: domain.SyscallSet) -> None:
        """The agent's own verdict on the start (cgroup created before its first process ran)."""
        self.start_observed = payload.start_observed
        self.reason = (
            f"pod {self.pod}: syscalls recorded from the container's start on node {self.node}"
            if payload.start_observed
            else f"pod {self.pod}: the container's start-up syscalls were not recorded on node "
            f"{self.node} (its cgroup existed before the agent watched, or learning began after"
            " it started)"
        )


def profile_name(workload: domain.Workload, container: str, digest: str) -> str:
    """Return the profile's resource name."""
    return f"workloads/{workload.path}/containers/{container}/profiles/{digest}"


Keys = list[tuple[Category, ItemKey, str]]


def _exec_keys(event: domain.Event, payload: domain.Exec) -> Keys:
    if payload.return_value:
        return []
    return [
        (Category.EXEC, (payload.path, *argv_pattern(payload.argv)), ""),
        (Category.USER, (event.uid, payload.euid), ""),
    ]


def _open_keys(event: domain.Event, payload: domain.FileOpen) -> Keys:
    category = Category.FAILED_FILE if payload.return_value < 0 else Category.FILE
    return [(category, (collapse_path(payload.path),), "")]


def _flow_keys(event: domain.Event, payload: domain.Flow) -> Keys:
    port = payload.local_port if payload.direction == domain.ACCEPT else payload.remote_port
    return [
        (Category.PEER, (payload.direction, payload.protocol, payload.remote_address, port), "")
    ]


def _dns_keys(event: domain.Event, payload: domain.Dns) -> Keys:
    return [(Category.DNS, (payload.name,), "")]


def _capability_keys(event: domain.Event, payload: domain.Capability) -> Keys:
    return [(Category.CAPABILITY, (payload.number,), payload.name)]


def _syscall_keys(event: domain.Event, payload: domain.SyscallSet) -> Keys:
    pairs = zip(payload.numbers, payload.names, strict=True)
    return [(Category.SYSCALL, (payload.arch, n), name) for n, name in pairs]


def _deviation_keys(event: domain.Event, payload: domain.Deviation) -> Keys:
    return [(Category.SYSCALL, (payload.arch, payload.number), payload.name)]


_KEYS: dict[type, Callable[[domain.Event, Any], Keys]] = {
    domain.Exec: _exec_keys,
    domain.FileOpen: _open_keys,
    domain.Flow: _flow_keys,
    domain.Dns: _dns_keys,
    domain.Capability: _capability_keys,
    domain.SyscallSet: _syscall_keys,
    domain.Deviation: _deviation_keys,
}


def item_keys(event: domain.Event) -> Keys:
    """Return the (category, key, label) of every item `event` shows."""
    keys = _KEYS.get(type(event.payload))
    return keys(event, event.payload) if keys else []


def enrich(
    item: Item, category: Category, event: domain.Event, context: Context, count: int = 1
) -> bool:
    """Fold the event's details (it stands for `count` equal events) into `item`; return True
    when anything changed."""
    before = (len(item.tags), item.flags, len(item.errnos), item.allowed, item.denied)
    payload = event.payload
    tag = ""
    if category is Category.EXEC:
        tag = context.parent_exe
    elif category in (Category.FILE, Category.FAILED_FILE, Category.USER):
        tag = context.exe
        if isinstance(payload, domain.FileOpen):
            item.flags |= payload.flags
            if payload.return_value < 0:
                item.errnos.add(-payload.return_value)
    elif category is Category.PEER:
        for name in context.dns_names:
            _bounded_add(item.tags, name, MAX_TAGS)
    elif category is Category.DNS and isinstance(payload, domain.Dns):
        for address in payload.addresses:
            _bounded_add(item.tags, address, MAX_ADDRESSES)
    elif category is Category.CAPABILITY and isinstance(payload, domain.Capability):
        if payload.allowed:
            item.allowed += payload.hits * count
        else:
            item.denied += payload.hits * count
    if tag:
        _bounded_add(item.tags, tag, MAX_TAGS)
    return before != (len(item.tags), item.flags, len(item.errnos), item.allowed, item.denied)


def _bounded_add(values: set[str], value: str, limit: int) -> None:
    if len(values) < limit:
        values.add(value)
