"""Validation and translation of one event payload of a ReportEventsRequest into its domain
form, plus the checks of the values they share (paths, counts, enums, times, addresses). Called
by wire.py once per distinct event of a batch; a problem raises InvalidArgument naming the field."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from ipaddress import ip_address
from typing import Any

from servicekit.errors import InvalidArgument
from services.runtime import domain
from services.runtime.domain import MAX_ARG_BYTES, MAX_ARGS, MAX_COUNT, MAX_PATH_BYTES, MAX_PID

_SOCKET, _TTY = 3, 4
EVENT_TYPES = {
    "syscall_set": 1,
    "syscall_deviation": 2,
    "exec": 3,
    "process_fork": 4,
    "process_exit": 5,
    "file_open": 6,
    "network_flow": 7,
    "dns_query": 8,
    "capability_use": 9,
    "seccomp_audit": 10,
}
EARLIEST, LATEST = 946_684_800, 4_102_444_800  # 2000-01-01, 2100-01-01


class Problem(ValueError):
    """What is wrong with a value; the caller names where it is (only on this error path)."""


def bad(where: str, problem: str) -> InvalidArgument:
    """Return the error that rejects the whole batch because of `where`."""
    return InvalidArgument(f"batch rejected, nothing stored: {where}: {problem}")


def enum(value: int, high: int) -> int:
    """Return `value` when it is a known enum number (0 to `high`)."""
    if not 0 <= value <= high:
        raise Problem(f"unknown enum value {value}")
    return value


def count(value: int) -> int:
    """Return a hit count (0 means 1); reject absurd counts."""
    if value > MAX_COUNT:
        raise Problem(f"count {value} is absurd")
    return value or 1


def _path(value: str) -> str:
    if not value or len(value) > MAX_PATH_BYTES:
        raise Problem(f"path must be 1-{MAX_PATH_BYTES} bytes")
    return value


@lru_cache(maxsize=65_536)
def is_address(value: str) -> bool:
    """Return True when `value` is an IPv4 or IPv6 address (memoised)."""
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


def timestamp(seconds: int, nanos: int) -> float:
    """Return epoch seconds; 0 for an unset time; reject times before 2000 or after 2100."""
    if seconds == 0 and nanos == 0:
        return 0.0
    if not EARLIEST <= seconds <= LATEST:
        raise Problem(f"time {seconds}s is absurd")
    return seconds + nanos * 1e-9


Counted = tuple[int, int]  # (event type, unattributed reason)
Origins = dict[tuple[int, bytes], domain.Origin]  # by cgroup id and attribution encoding


def attributed(
    attribution: Any, node: str, cgroup_id: int, origins: Origins
) -> domain.Origin | int:
    """The validated origin `attribution` names (memoised in `origins`), or its unattributed
    reason when it names no pod."""
    if not attribution.pod_uid:
        reason = enum(attribution.unattributed_reason, 4)
        if not reason:
            raise Problem("neither attributed nor an unattributed_reason")
        return reason
    key = (cgroup_id, attribution.SerializeToString())
    origin = origins.get(key)
    if origin is None:
        origin = origins[key] = origin_of(attribution, node, cgroup_id)
    return origin


def origin_of(attribution: Any, node: str, cgroup_id: int) -> domain.Origin:
    """Return the validated origin an attributed event or cgroup names."""
    ref = attribution.workload
    fields = (ref.namespace, ref.kind, ref.name, ref.container, attribution.pod_uid)
    if not all(fields) or any(len(f) > domain.MAX_NAME for f in fields):
        raise Problem("attribution needs namespace, kind, name, container and pod_uid")
    if len(attribution.image) > MAX_PATH_BYTES or len(attribution.image_digest) > 256:
        raise Problem("image or image_digest is too long")
    return domain.Origin(
        domain.Workload(ref.namespace, ref.kind, ref.name),
        ref.pod,
        ref.container,
        attribution.pod_uid,
        attribution.container_id,
        attribution.image,
        attribution.image_digest,
        node,
        cgroup_id,
        attribution.cgroup_start if attribution.cgroup_start <= domain.CGROUP_START_MISSED else 0,
    )


def _exec(m: Any) -> domain.Exec:
    if len(m.argv) > MAX_ARGS or any(len(a) > MAX_ARG_BYTES for a in m.argv):
        raise Problem(f"argv must have at most {MAX_ARGS} arguments of {MAX_ARG_BYTES} bytes")
    return domain.Exec(
        _path(m.path),
        tuple(m.argv),
        m.euid,
        m.return_value,
        m.stdin_kind == _SOCKET,
        m.stdout_kind == _SOCKET,
        m.stdin_kind == _TTY,
    )


def fork(child_pid: int) -> domain.Fork:
    """Return a validated fork."""
    if not 0 < child_pid <= MAX_PID:
        raise Problem(f"child_pid {child_pid} is absurd")
    return domain.fork(child_pid)


def _fork(m: Any) -> domain.Fork:
    return fork(m.child_pid)


def file_open(path: str, flags: int, return_value: int, hits: int) -> domain.FileOpen:
    """Return a validated file open."""
    return domain.file_open(_path(path), flags, return_value, count(hits))


def _open(m: Any) -> domain.FileOpen:
    return file_open(m.path, m.flags, m.return_value, m.count)


def flow(
    direction: int,
    protocol: int,
    remote: tuple[str, int],
    *,
    local_port: int,
    return_value: int,
    hits: int,
) -> domain.Flow:
    """Return a validated network flow; `remote` is (address, port). The ephemeral port (the
    local one of an outbound flow, the remote one of an accepted flow) becomes 0 (kept_ports)."""
    address, port = remote
    if port > 65535 or local_port > 65535:
        raise Problem("ports must be at most 65535")
    if not is_address(address):
        raise Problem(f"remote_address {address[:64]!r} is not an IP address")
    direction, port, local_port = kept_ports(enum(direction, 3), port, local_port)
    return domain.Flow(
        direction, enum(protocol, 3), address, port, local_port, return_value, count(hits)
    )


def inbound(direction: int, local_port: int) -> bool:
    """Whether a flow is inbound, so that its remote port is the ephemeral one: an accepted
    connection, or a UDP datagram sent from a port below the ephemeral range (a DNS, statsd or
    syslog server answering a client)."""
    if direction == domain.ACCEPT:
        return True
    return direction == domain.UDP_SEND and 0 < local_port < domain.EPHEMERAL_START


def kept_ports(direction: int, remote_port: int, local_port: int) -> tuple[int, int, int]:
    """The direction and the ports a flow is kept with: the ephemeral one becomes 0. An inbound
    flow is kept as an accepted one on its local port (a server's UDP replies too, rather than
    a new peer on each client's ephemeral port)."""
    if inbound(direction, local_port):
        return domain.ACCEPT, 0, local_port
    return direction, remote_port, 0


def _flow(m: Any) -> domain.Flow:
    remote = (m.remote_address, m.remote_port)
    return flow(
        m.direction,
        m.protocol,
        remote,
        local_port=m.local_port,
        return_value=m.return_value,
        hits=m.count,
    )


def _dns(m: Any) -> domain.Dns:
    name = m.query_name.lower().rstrip(".")
    if not name or len(name) > domain.MAX_NAME or len(m.answer_addresses) > 32:
        raise Problem("query_name must be 1-253 bytes with at most 32 answer addresses")
    if not all(is_address(a) for a in m.answer_addresses):
        raise Problem("answer_addresses must be IP addresses")
    return domain.Dns(name, tuple(m.answer_addresses))


def capability(
    name: str, number: int, allowed: bool, hits: int, startup: bool = False
) -> domain.Capability:
    """Return a validated capability use."""
    if number > 63 or not name:
        raise Problem("capability must have a name and a number up to 63")
    return domain.Capability(name, number, allowed, count(hits), startup)


def _capability(m: Any) -> domain.Capability:
    return capability(m.capability_name, m.capability_number, m.allowed, m.count, m.runtime_startup)


def _syscall_set(m: Any) -> domain.SyscallSet:
    numbers = tuple(m.syscall_numbers)
    names = tuple(m.syscall_names) or ("",) * len(numbers)
    if len(numbers) > 1024 or len(names) != len(numbers):
        raise Problem("at most 1024 syscall numbers, one name per number")
    if numbers and (
        numbers[-1] > domain.MAX_SYSCALL_NUMBER or list(numbers) != sorted(set(numbers))
    ):
        raise Problem("syscall numbers must be ascending, unique and at most 1023")
    arch = enum(m.arch, 8)
    return domain.SyscallSet(
        arch, numbers, names, m.start_observed, frozenset(m.runtime_startup_syscall_numbers)
    )


def deviation(arch: int, number: int, name: str, hits: int, source: str) -> domain.Deviation:
    """Return a validated syscall deviation reported by `source`."""
    if number > domain.MAX_SYSCALL_NUMBER:
        raise Problem(f"syscall number {number} is absurd")
    return domain.Deviation(enum(arch, 8), number, name, count(hits), source)


def _exit(m: Any) -> domain.Exit:
    return domain.exit_(m.exit_code)


def _monitor(m: Any) -> domain.Deviation:
    return deviation(m.arch, m.syscall_number, m.syscall_name, m.count, "monitor")


def _audit(m: Any) -> domain.Deviation:
    return deviation(m.arch, m.syscall_number, m.syscall_name, m.count, "seccomp_audit")


PAYLOADS: dict[str, Callable[[Any], domain.Payload]] = {
    "exec": _exec,
    "process_fork": _fork,
    "file_open": _open,
    "network_flow": _flow,
    "dns_query": _dns,
    "capability_use": _capability,
    "syscall_set": _syscall_set,
    "process_exit": _exit,
    "syscall_deviation": _monitor,
    "seccomp_audit": _audit,
}
