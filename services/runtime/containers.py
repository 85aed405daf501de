"""Short-term memory of one running container, kept by the engine for the rules: a bounded
process table built from Exec/Fork/Exit (for process trees and the acting executable), the
paths recently opened for writing (for drift), and the DNS answers seen (to name peers). Pure."""

from __future__ import annotations

from typing import NamedTuple, TypeVar

from services.runtime import domain
from services.runtime.profiles import WRITE_FLAGS

MAX_PROCESSES = 1024
MAX_WRITTEN = 4096
MAX_ADDRESSES = 2048
MAX_TREE = 32


class Process(NamedTuple):
    """One process of the container as last seen."""

    pid: int
    ppid: int
    path: str
    argv: tuple[str, ...]
    uid: int
    euid: int


def _process(  # noqa: PLR0917 - Process's own fields, in its order
    pid: int, ppid: int, path: str, argv: tuple[str, ...], uid: int, euid: int
) -> Process:
    """Return Process(...) without the NamedTuple's interpreted __new__ (domain.TUPLE_NEW)."""
    return domain.TUPLE_NEW(Process, (pid, ppid, path, argv, uid, euid))  # type: ignore[no-any-return]


K = TypeVar("K")
V = TypeVar("V")


def _bounded_put(table: dict[K, V], key: K, value: V, limit: int) -> None:
    table.pop(key, None)
    table[key] = value
    if len(table) > limit:
        del table[next(iter(table))]


class ContainerState:
    """Processes, written paths and DNS answers of one container (pod UID + container)."""

    __slots__ = ("dns", "processes", "written")

    def __init__(self) -> None:
        self.processes: dict[int, Process] = {}
        self.written: dict[str, None] = {}
        self.dns: dict[str, tuple[str, ...]] = {}

    def observe(self, event: domain.Event) -> None:
        """Update the tables after the rules have seen `event`."""
        payload = event.payload
        if isinstance(payload, domain.Exec):
            if payload.return_value == 0:
                entry = _process(
                    event.pid, event.ppid, payload.path, payload.argv, event.uid, payload.euid
                )
                _bounded_put(self.processes, event.pid, entry, MAX_PROCESSES)
        elif isinstance(payload, domain.Fork):
            parent = self.processes.get(event.pid)
            if parent is None:  # it forked in the container, so it runs there (started unseen)
                parent = _process(event.pid, event.ppid, event.comm, (), event.uid, event.uid)
                _bounded_put(self.processes, event.pid, parent, MAX_PROCESSES)
            child = _process(
                payload.child_pid, event.pid, parent.path, parent.argv, event.uid, event.uid
            )
            _bounded_put(self.processes, payload.child_pid, child, MAX_PROCESSES)
        elif isinstance(payload, domain.Exit):
            self.processes.pop(event.pid, None)
        elif isinstance(payload, domain.FileOpen):
            if payload.return_value >= 0 and payload.flags & WRITE_FLAGS:
                _bounded_put(self.written, payload.path, None, MAX_WRITTEN)
        elif isinstance(payload, domain.Dns):
            for address in payload.addresses:
                names = self.dns.get(address, ())
                if payload.name not in names:
                    _bounded_put(self.dns, address, (*names, payload.name)[-8:], MAX_ADDRESSES)

    def exe(self, event: domain.Event) -> str:
        """Return the acting process's executable, or its comm when it is not in the table."""
        known = self.processes.get(event.pid)
        return known.path if known else event.comm

    def parent_exe(self, event: domain.Event) -> str:
        """Return the parent's executable when known, else ""."""
        known = self.processes.get(event.ppid)
        return known.path if known else ""

    def tree(self, event: domain.Event) -> tuple[Process, ...]:
        """Return the chain from the oldest known ancestor to the acting process, root first."""
        chain: list[Process] = []
        pid = event.pid
        current = self.processes.get(pid)
        if current is None or isinstance(event.payload, domain.Exec):
            current = _acting(event)
        seen: set[int] = set()
        while current is not None and len(chain) < MAX_TREE and current.pid not in seen:
            chain.append(current)
            seen.add(current.pid)
            current = self.processes.get(current.ppid)
        return tuple(reversed(chain))


def _acting(event: domain.Event) -> Process:
    payload = event.payload
    if isinstance(payload, domain.Exec):
        return _process(event.pid, event.ppid, payload.path, payload.argv, event.uid, payload.euid)
    return _process(event.pid, event.ppid, event.comm, (), event.uid, event.uid)
