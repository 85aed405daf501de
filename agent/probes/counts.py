"""True hit counts for de-duplicated events. The kernel sends the first file open, flow,
capability check or syscall deviation of each key as an event (count 1) and only counts the
repeats in its de-duplication maps; `CountReport` remembers each first record and, when asked
(with the periodic syscall-set report and at cgroup removal), turns the growth of each key's
count into one event like the first whose count is the hits since the previous report. So the
counts of a key's events add up to the kernel's, with nothing counted twice. Fed by
agent.probes.source from the consumer thread, read on the main loop's."""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import event_pb2 as pb

from agent.compact import decode_event
from agent.decode import FLOW, HEADER
from agent.probes.control import Control
from agent.probes.loader import EPHEMERAL_MIN

_TYPE = struct.Struct("<I")
_CGID = struct.Struct("<Q")
_OPEN_KEY = struct.Struct("<QiI")  # cgid, result class (0 or the errno), flags; then the path
_OPEN_HEAD = struct.Struct("<iI")  # the open record's return value and flags
_PAIR = struct.Struct("<II")
_PORTS = struct.Struct("<HH")  # a flow record's remote and local port, at _PORTS_AT in its body
_PORTS_AT = 12
_ACCEPT, _UDP_SEND = 2, 3


@dataclass(frozen=True)
class _Kind:
    """One de-duplication map: its name, its capacity and the event's payload field."""

    table: str
    capacity: int
    field: str


_KINDS: dict[int, _Kind] = {
    pb.EVENT_TYPE_FILE_OPEN: _Kind("open_seen", 32768, "file_open"),
    pb.EVENT_TYPE_NETWORK_FLOW: _Kind("flows_seen", 16384, "network_flow"),
    pb.EVENT_TYPE_CAPABILITY_USE: _Kind("caps_seen", 16384, "capability_use"),
    pb.EVENT_TYPE_SYSCALL_DEVIATION: _Kind("deviations", 16384, "syscall_deviation"),
}


def kernel_key(record: bytes) -> tuple[int, bytes] | None:
    """(event type, the bytes of its de-duplication map key) for a ring-buffer record of a
    de-duplicated type; None for other records."""
    kind, cgroup_id = _TYPE.unpack_from(record)[0], HEADER.unpack_from(record)[5]
    cgid, body = _CGID.pack(cgroup_id), record[HEADER.size :]
    if kind == pb.EVENT_TYPE_FILE_OPEN:
        ret, flags = _OPEN_HEAD.unpack_from(body)
        return kind, _OPEN_KEY.pack(cgroup_id, min(ret, 0), flags) + body[16:272]
    if kind == pb.EVENT_TYPE_NETWORK_FLOW:
        return kind, _flow_key(body[: FLOW.size])  # network.c struct flow_key
    if kind == pb.EVENT_TYPE_CAPABILITY_USE:
        return kind, cgid + body[: _PAIR.size]
    if kind == pb.EVENT_TYPE_SYSCALL_DEVIATION:
        return kind, cgid + struct.pack("<Q", _PAIR.unpack_from(body)[0])
    return None


def _flow_key(body: bytes) -> bytes:
    """A flow record's key in flows_seen: the record itself (network.c struct flow_key) with the
    real ports the kernel leaves out of the key zeroed: an accept's peer port; a UDP send's own
    port unless below EPHEMERAL_MIN (a reply), and then the peer's port if ephemeral."""
    remote, local = _PORTS.unpack_from(body, _PORTS_AT)
    if body[8] == _ACCEPT:
        remote = 0
    elif body[8] == _UDP_SEND:
        local = local if local < EPHEMERAL_MIN else 0
        remote = 0 if local and remote >= EPHEMERAL_MIN else remote
    else:
        return body
    return body[:_PORTS_AT] + _PORTS.pack(remote, local) + body[_PORTS_AT + _PORTS.size :]


class _First:
    """A key's first record and the count reported for the key so far (the record's own 1)."""

    __slots__ = ("record", "reported")

    def __init__(self, record: bytes) -> None:
        self.record, self.reported = record, 1


class CountReport:
    """First records by kernel key with the count already reported for each (bounded by the
    kernel maps' capacities: a key the kernel could not store is never counted there)."""

    def __init__(self, control: Control) -> None:
        self._control = control
        self._lock = threading.Lock()
        self._seen: dict[int, dict[bytes, _First]] = {k: {} for k in _KINDS}

    def remember(self, record: bytes) -> None:
        """Note a record; only the first records of de-duplicated types are kept."""
        kind = _TYPE.unpack_from(record)[0]
        seen = self._seen.get(kind)
        if seen is None or len(seen) >= _KINDS[kind].capacity:
            return  # not de-duplicated, or more keys than the kernel map holds
        found = kernel_key(record)
        assert found is not None
        with self._lock:
            seen.setdefault(found[1], _First(record))

    def report(self, only: set[int] | None = None) -> list[pb.Event]:
        """Events for every key whose kernel count grew since the last report, each with the
        growth as its count (only the cgroups in `only`, when given)."""
        now = Timestamp()
        now.GetCurrentTime()
        out: list[pb.Event] = []
        for kind, spec in _KINDS.items():
            counts = self._control.dedup_counts(spec.table)
            with self._lock:
                seen = self._seen[kind]
                grown = [
                    (seen[k], n)
                    for k, n in counts.items()
                    if k in seen
                    and n > seen[k].reported
                    and (only is None or _CGID.unpack_from(k)[0] in only)
                ]
            for first, total in grown:
                event = decode_event(first.record)
                if not isinstance(event, pb.Event):
                    continue
                getattr(event, spec.field).count = total - first.reported
                first.reported = total
                event.event_time.CopyFrom(now)
                out.append(event)
        return out

    def forget(self, cgroup_id: int) -> None:
        """Drop a removed cgroup's records (the kernel drops its counts in Control.forget)."""
        prefix = _CGID.pack(cgroup_id)
        with self._lock:
            for seen in self._seen.values():
                for key in [k for k in seen if k.startswith(prefix)]:
                    del seen[key]
