"""The mapped ring-buffer reader: on a fake ring in a memfd (busy, discarded and wrapping records
placed by hand), and on a real one-page BPF ring fed by a tracepoint this test triggers with an
unknown prctl option, which wraps the ring hundreds of times."""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.localpod import cgroup2_mount
from agent.probes import consumer as consumer_module
from agent.probes import ringbuf
from agent.probes.consumer import Consumer, event_type
from agent.probes.loader import Loader
from agent.probes.ringbuf import BUSY, DISCARD, PAGE, TSO_MACHINES, MappedRing, RingUnavailable
from tests.agent.conftest import ebpf_unavailable

OPTION = 0x52425546  # no prctl option has this number: the kernel fires task_prctl_unknown
SIZE = PAGE  # the test program's ring: one page
# prctl(OPTION, count, first, discard_every): `count` (<= 128) records with sequence numbers from
# `first`, each 8 + (seq * 5 & 31) bytes of a pattern of seq; every record whose seq is a
# multiple of `discard_every` (when not 0) is reserved and then discarded.
PROGRAM = """
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(failures, u64, 1);
struct record { u64 w[5]; };
struct discarded { u64 seq; u64 pad; };

static __always_inline void failed(void) {
    int zero = 0;
    u64 *n = failures.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
}

TRACEPOINT_PROBE(task, task_prctl_unknown) {
    if (args->option != OPTION || bpf_get_current_pid_tgid() >> 32 != OWNER)
        return 0;
    u64 count = args->arg2, first = args->arg3, every = args->arg4;
    struct record r = {};
    for (u32 i = 0; i < 128 && i < count; i++) {
        u64 seq = first + i;
        if (every && seq % every == 0) {
            struct discarded *d = events.ringbuf_reserve(sizeof(struct discarded));
            if (!d) {
                failed();
                continue;
            }
            d->seq = seq;
            events.ringbuf_discard(d, BPF_RB_NO_WAKEUP);
            continue;
        }
        r.w[0] = seq;
        r.w[1] = ~seq;
        r.w[2] = seq * 0x9E3779B97F4A7C15ULL;
        r.w[3] = seq << 7;
        r.w[4] = seq ^ 0x5555;
        u32 size = 8 + (((u32)seq * 5) & 31);
        if (events.ringbuf_output(&r, size, BPF_RB_NO_WAKEUP))
            failed();
    }
    return 0;
}
"""
needs_x86 = pytest.mark.skipif(
    platform.machine().lower() not in TSO_MACHINES, reason="the mapped reader is x86-64 only"
)
libc = ctypes.CDLL(None, use_errno=True)  # this module's own handle: argtypes stay private
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


def payload(seq: int) -> bytes:
    """What the program sends for `seq`."""
    words = (seq, ~seq, seq * 0x9E3779B97F4A7C15, seq << 7, seq ^ 0x5555)
    return struct.pack("<5Q", *(w & (2**64 - 1) for w in words))[: 8 + (seq * 5 & 31)]


def footprint(seq: int, every: int) -> int:
    """Ring bytes that `seq`'s record takes, header and padding included."""
    length = 16 if every and seq % every == 0 else 8 + (seq * 5 & 31)
    return (length + 8 + 7) & ~7


def emit(count: int, first: int, discard_every: int = 0) -> None:
    """Run the program once; its records are committed when prctl returns."""
    assert libc.prctl(OPTION, count, first, discard_every, 0) == -1  # EINVAL: unknown option


@dataclass
class Ring:
    loader: Loader
    ring: MappedRing

    def failures(self) -> int:
        return int(self.loader.table("failures")[ctypes.c_int(0)].value)


def _loader(size: int = SIZE) -> Loader:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    text = f"#define OPTION {OPTION}\n#define OWNER {os.getpid()}\n{PROGRAM}"
    return Loader(cgroup2_mount(), ring_pages=size // PAGE, text=text)


@pytest.fixture(scope="module")
def real() -> Iterator[Ring]:
    """The test program with its one-page ring mapped."""
    loader = _loader()
    table = loader.table("events")
    assert table.max_entries == SIZE
    ring = MappedRing(table.map_fd, table.max_entries)
    yield Ring(loader, ring)
    ring.close()
    loader.close()


@pytest.mark.ebpf
@needs_x86
def test_records_intact_in_order_across_wraps(real: Ring) -> None:
    start, seq, got, straddled = real.ring.consumer_pos, 0, [], 0
    for _ in range(400):
        emit(60, seq, discard_every=7)
        got.extend(real.ring.drain(1000))
        assert real.ring.consumer_pos == real.ring.producer_pos  # nothing left, nothing busy
        seq += 60
    expected = [payload(s) for s in range(seq) if s % 7]
    assert got == expected  # discarded records (every 7th) are skipped
    pos = start
    for s in range(seq):
        end = pos + footprint(s, 7)
        straddled += (pos & (SIZE - 1)) + footprint(s, 7) > SIZE
        pos = end
    assert pos == real.ring.producer_pos
    assert (pos - start) // SIZE >= 100 and straddled >= 10
    assert real.failures() == 0


@pytest.mark.ebpf
@needs_x86
def test_a_full_drain_frees_the_whole_ring(real: Ring) -> None:
    # Each burst fills most of the ring: without consumer_pos stored, the second would not fit.
    per_burst = (SIZE * 3 // 4) // 48
    for burst in range(50):
        emit(per_burst, 1_000_000 + burst * per_burst)
        assert len(real.ring.drain(SIZE)) == per_burst
    assert real.failures() == 0


@pytest.mark.ebpf
@needs_x86
def test_a_drain_stops_at_its_limit(real: Ring) -> None:
    emit(100, 2_000_000)
    first = real.ring.drain(30)
    assert first == [payload(s) for s in range(2_000_000, 2_000_030)]
    assert real.ring.consumer_pos < real.ring.producer_pos
    assert real.ring.drain(1000) == [payload(s) for s in range(2_000_030, 2_000_100)]


@pytest.mark.ebpf
@needs_x86
def test_consumer_hands_every_record_to_the_sink() -> None:
    # The consumer thread drains while this one produces: the ring holds everything (512 KB),
    # so a slow drain cannot drop, and the records cross its end several times over.
    loader = _loader(128 * PAGE)
    try:
        got: list[bytes] = []
        drains: list[int] = []
        consumer = Consumer(loader, got.append, drained=lambda: drains.append(len(got)))
        consumer.start()
        for n in range(200):
            emit(50, n * 50, discard_every=5)
        consumer.stop()  # drains the remainder
        assert got == [payload(s) for s in range(10_000) if s % 5]
        assert drains and drains[-1] == len(got)
        assert loader.table("failures")[ctypes.c_int(0)].value == 0
    finally:
        loader.close()


@pytest.mark.ebpf
@needs_x86
def test_a_failing_sink_loses_one_counted_record_not_the_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loader = _loader()
    try:
        got: list[bytes] = []

        def sink(raw: bytes) -> None:
            if raw == payload(3):
                raise ValueError("undecodable")
            got.append(raw)

        consumer = Consumer(loader, sink)
        emit(10, 0)
        with caplog.at_level(logging.ERROR, logger="agent.probes.consumer"):
            consumer.consume()
        assert got == [payload(s) for s in range(10) if s != 3]
        assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
        # counted as an agent-side drop of its type (the record's first word: 3, an exec)
        assert consumer.lost() == {3: 1}
    finally:
        loader.close()


@pytest.mark.ebpf
@needs_x86
def test_a_reader_behind_leaves_records_in_the_ring() -> None:
    """With `room`, a drain takes no more than the reader can hold; the rest waits in the ring
    (where an overflow is the kernel's counted drop) and comes on the next drain, in order."""
    loader = _loader()
    try:
        got: list[bytes] = []
        room = [25]
        consumer = Consumer(loader, got.append, room=lambda: room[0] - len(got))
        emit(60, 0)
        consumer.consume()
        assert got == [payload(s) for s in range(25)]
        consumer.consume()  # still full: nothing taken
        assert len(got) == 25
        room[0] = 1000
        consumer.consume()
        assert got == [payload(s) for s in range(60)]
    finally:
        loader.close()


@pytest.mark.ebpf
@needs_x86
def test_a_closed_consumer_drains_then_reads_no_more() -> None:
    loader = _loader()
    try:
        got: list[bytes] = []
        consumer = Consumer(loader, got.append)
        emit(5, 0)
        consumer.close()  # drains what was there, then unmaps the ring
        assert got == [payload(s) for s in range(5)]
        emit(5, 5)
        consumer.consume()
        assert len(got) == 5
    finally:
        loader.close()


@pytest.mark.ebpf
def test_consumer_falls_back_to_bcc_elsewhere(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loader = _loader()
    try:
        monkeypatch.setattr(ringbuf.platform, "machine", lambda: "aarch64")
        consumer_module._fall_back.cache_clear()  # logged once per process: forget earlier ones
        got: list[bytes] = []
        with caplog.at_level(logging.WARNING, logger="agent.probes.consumer"):
            consumer = Consumer(loader, got.append)
        assert [r.getMessage() for r in caplog.records] == [
            "The ring buffer is read through BCC's slower callbacks because this machine is"
            " aarch64 and the mapped reader relies on x86-64 memory ordering."
        ]
        emit(40, 0, discard_every=3)
        consumer.consume()
        assert got == [payload(s) for s in range(40) if s % 3]
    finally:
        loader.close()


@pytest.mark.ebpf
def test_a_failing_sink_is_counted_under_bcc_too(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = _loader()
    try:
        monkeypatch.setattr(ringbuf.platform, "machine", lambda: "aarch64")
        got: list[bytes] = []

        def sink(raw: bytes) -> None:
            if raw in (payload(5), payload(9)):
                raise ValueError("undecodable")
            got.append(raw)

        consumer = Consumer(loader, sink)
        emit(12, 0)
        consumer.consume()
        assert got == [payload(s) for s in range(12) if s not in (5, 9)]
        assert consumer.lost() == {5: 1, 9: 1}
    finally:
        loader.close()


def test_lost_records_are_counted_by_contract_event_type() -> None:
    assert event_type(struct.pack("<I", 8) + bytes(60)) == 8  # a DNS record
    assert event_type(struct.pack("<I", 16) + bytes(60)) == 0  # a cgroup change: not an EventType
    assert event_type(b"\x07") == 0  # too short to say


class FakeRing:
    """A memfd laid out like a ring map: consumer page, producer page, data mapped twice."""

    def __init__(self, size: int = PAGE) -> None:
        self.size, self.fd = size, os.memfd_create("fake-ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * size)
        self.map = mmap.mmap(self.fd, 2 * PAGE + 2 * size)
        self.producer_pos = 0

    def put(self, length_word: int, data: bytes) -> int:
        """Append a record (header word as given) and publish it; returns its position."""
        pos = self.producer_pos
        record = struct.pack("<II", length_word, 0) + data
        for i, byte in enumerate(record):
            at = (pos + i) % self.size
            self.map[2 * PAGE + at] = self.map[2 * PAGE + self.size + at] = byte
        self.producer_pos += (len(record) + 7) & ~7
        struct.pack_into("<Q", self.map, PAGE, self.producer_pos)
        return pos

    def set_length_word(self, pos: int, word: int) -> None:
        for base in (0, self.size):
            struct.pack_into("<I", self.map, 2 * PAGE + base + pos % self.size, word)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


@pytest.fixture
def fake() -> Iterator[FakeRing]:
    ring = FakeRing()
    yield ring
    ring.close()


@needs_x86
def test_a_busy_record_ends_the_drain_until_committed(fake: FakeRing) -> None:
    ring = MappedRing(fake.fd, fake.size)
    fake.put(3, b"one")
    busy = fake.put(BUSY | 5, b"two..")
    fake.put(5, b"three")
    assert ring.drain(10) == [b"one"]
    assert ring.consumer_pos == busy
    fake.set_length_word(busy, 5)
    assert ring.drain(10) == [b"two..", b"three"]
    assert ring.consumer_pos == fake.producer_pos
    ring.close()


@needs_x86
def test_discarded_and_wrapping_records(fake: FakeRing) -> None:
    ring = MappedRing(fake.fd, fake.size)
    filler = b"x" * (fake.size - 64 - 8)
    fake.put(len(filler), filler)
    fake.put(DISCARD | 20, bytes(20))
    assert ring.drain(10) == [filler]
    wrapping = bytes(range(100))  # starts 32 bytes before the end of the data area
    assert fake.put(len(wrapping), wrapping) % fake.size == fake.size - 32
    assert ring.drain(10) == [wrapping]
    ring.close()


def test_refused_where_plain_loads_are_not_ordered(
    fake: FakeRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ringbuf.platform, "machine", lambda: "aarch64")
    with pytest.raises(RingUnavailable, match="aarch64"):
        MappedRing(fake.fd, fake.size)


def test_refused_when_the_size_is_not_a_power_of_two_pages(fake: FakeRing) -> None:
    with pytest.raises(RingUnavailable, match="power-of-two"):
        MappedRing(fake.fd, 3 * PAGE)
