"""Drains the probes' ring buffer: records are submitted with BPF_RB_NO_WAKEUP, so a timer thread
drains it every few tens of milliseconds instead of the kernel waking us per event. The ring is
read through its memory mapping (agent.probes.ringbuf), or through BCC's per-record callbacks
where it cannot be mapped. A record the sink fails on is lost to the agent: logged and counted
per event type (`Consumer.lost`), an agent-side drop. The Collector keeps decoded events for
the recorder and tests, with deadline waits.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from parallax.runtime.v1 import event_pb2 as pb

from agent.compact import decode_event
from agent.decode import CgroupChange
from agent.probes.loader import Loader
from agent.probes.ringbuf import MappedRing, RingUnavailable

Record = pb.Event | CgroupChange
# Records per drain of the mapped ring: the kernel reuses their space once the batch is copied.
BATCH = 4096
_KIND = struct.Struct("<I")  # every record starts with its type (common.h struct hdr)
_EVENT_TYPES = frozenset(pb.EventType.values())

log = logging.getLogger(__name__)


@functools.cache
def _fall_back(reason: str) -> None:
    log.warning("The ring buffer is read through BCC's slower callbacks because %s.", reason)


def event_type(raw: bytes) -> int:
    """The contract's EventType of a raw record; EVENT_TYPE_UNSPECIFIED for a record too short
    to have one or of a kind the contract does not know (cgroup changes)."""
    kind = _KIND.unpack_from(raw)[0] if len(raw) >= _KIND.size else 0
    return kind if kind in _EVENT_TYPES else pb.EVENT_TYPE_UNSPECIFIED


class Consumer:
    """Calls `sink` with each raw record, from its own thread, until stopped (then drains), and
    `drained` (when given) after each drain, so that a sink can hand records on in batches.
    `mapped=False` forces BCC's callback path (the fallback, kept for comparison). `room`, when
    given, says how many more records the sink's reader can hold: a mapped drain takes no more,
    so a reader that falls behind leaves records in the ring, where an overflow is counted,
    instead of growing the agent's memory. A record the sink raises on is logged and counted in
    `lost()`, and the drain goes on."""

    def __init__(
        self,
        loader: Loader,
        sink: Callable[[bytes], None],
        interval: float = 0.025,
        drained: Callable[[], None] | None = None,
        *,
        mapped: bool = True,
        room: Callable[[], int] | None = None,
    ):
        self._loader, self._sink, self._interval = loader, sink, interval
        self._drained, self._room = drained, room
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: Counter[int] = Counter()
        self._lost_lock = threading.Lock()
        table = loader.table("events")
        self._ring: MappedRing | None = None
        self._closed = False
        if mapped:
            try:
                self._ring = MappedRing(table.map_fd, table.max_entries)
            except RingUnavailable as exc:
                _fall_back(str(exc))
        if self._ring is None:
            table.open_ring_buffer(self._callback)

    def _callback(self, _ctx: Any, data: Any, size: int) -> int:
        raw = ctypes.string_at(data, size)
        try:
            self._sink(raw)
        except Exception:
            self._lose(raw)
        return 0

    def _lose(self, raw: bytes) -> None:
        with self._lost_lock:
            self._lost[event_type(raw)] += 1
        log.exception("a ring-buffer record was lost: the sink failed on it")

    def lost(self) -> dict[int, int]:
        """Records the sink failed on since the start, by EventType (cumulative): drops on the
        agent's side, to report next to the kernel's."""
        with self._lost_lock:
            return dict(self._lost)

    def consume(self) -> None:
        """Drain what the kernel has submitted so far (only when the thread is not running)."""
        if self._closed:
            return
        if self._ring is None:
            self._loader.bpf.ring_buffer_consume()
        else:
            sink, room = self._sink, self._room
            while True:
                limit = BATCH if room is None else min(BATCH, room())
                if limit <= 0:
                    break  # the reader is behind: the records wait in the ring (whose drops count)
                records = self._ring.drain(limit)
                for raw in records:
                    try:
                        sink(raw)
                    except Exception:  # lose one record, counted, not the thread
                        self._lose(raw)
                if len(records) < limit:
                    break
        if self._drained is not None:
            self._drained()

    def start(self) -> None:
        """Start the timer thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ringbuf-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.consume()

    def stop(self) -> None:
        """Stop the thread and drain the remainder."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.consume()

    def close(self) -> None:
        """Stop, drain, and unmap the ring (whose kernel memory the mapping keeps alive)."""
        self.stop()
        if self._ring is not None:
            self._ring.close()
        self._closed = True


class Collector:
    """Decoded records in arrival order; `wait_for` blocks on new records with a deadline."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._cond = threading.Condition()

    def __call__(self, raw: bytes) -> None:
        record = decode_event(raw)
        if record is None:
            return
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def events(self, cgroup_id: int | None = None, kind: str | None = None) -> list[pb.Event]:
        """Events, optionally of one cgroup and one payload kind ("exec", "file_open", ...)."""
        with self._cond:
            found = [r for r in self.records if isinstance(r, pb.Event)]
        return [
            e
            for e in found
            if (cgroup_id is None or e.cgroup_id == cgroup_id)
            and (kind is None or e.WhichOneof("payload") == kind)
        ]

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float) -> bool:
        """True once `predicate(self)` holds; False when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def clear(self) -> None:
        """Forget the records collected so far."""
        with self._cond:
            self.records.clear()
