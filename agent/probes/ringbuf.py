"""Reads a BPF_MAP_TYPE_RINGBUF straight from its memory mapping, so that draining is one Python
loop with no ctypes callback per record. agent.probes.consumer drains the probes' ring with it.

The kernel's layout (kernel/bpf/ringbuf.c; libbpf's ringbuf.c reads it the same way):

- file offset 0, one page, read-write: the consumer page; its first u64 is consumer_pos, which
  only user space writes;
- file offset PAGE_SIZE, read-only: the producer page (first u64 producer_pos), then the data
  area of `size` bytes mapped twice back to back, so a record that wraps is contiguous;
- each record is an 8-byte header (u32 len with bit 31 BUSY and bit 30 DISCARD, u32 page
  offset) followed by `len` bytes, and the next record starts 8-byte aligned.

Ordering: the producer writes a header (BUSY) and then publishes producer_pos with a release
store; it commits a record by writing its data and then swapping the header's len (xchg, a full
barrier). x86-64 is TSO: loads are not reordered with other loads and a store is not moved before
earlier loads, so plain loads and stores through the mapping are the acquire loads and release
store libbpf uses (CPython makes each access a call of its own, which the C compiler cannot merge
or reorder). Reading producer_pos, then a header, then its data sees the data the header
published; the record is copied into `bytes` before consumer_pos moves past it, so the kernel
never reuses space we are still reading. Other architectures need real barriers: refused there.
Positions are read and written as whole aligned words (memoryview items are copied with a
fixed-size memcpy, one instruction), never byte by byte, so they cannot tear.
"""

from __future__ import annotations

import mmap
import platform

PAGE = mmap.PAGESIZE
HEADER = 8
BUSY = 1 << 31
DISCARD = 1 << 30
# Architectures whose memory model makes plain loads and stores acquire and release.
TSO_MACHINES = ("x86_64", "amd64")


class RingUnavailable(Exception):
    """The ring buffer cannot be read through a mapping here (architecture, kernel, size)."""


def _map(fd: int, length: int, prot: int, offset: int) -> mmap.mmap:
    try:
        return mmap.mmap(fd, length, mmap.MAP_SHARED, prot, offset=offset)
    except OSError as exc:
        raise RingUnavailable(f"the kernel refused to map it ({exc})") from exc


class MappedRing:
    """A ring buffer map (`fd`, `size` data bytes: a power of two, pages) read through mmap.

    Not thread-safe: one thread drains it. The mappings keep the map alive after its fd is
    closed, until `close()`."""

    def __init__(self, fd: int, size: int) -> None:
        if platform.machine().lower() not in TSO_MACHINES:
            raise RingUnavailable(
                f"this machine is {platform.machine()} and the mapped reader relies on x86-64"
                " memory ordering"
            )
        if size < PAGE or size & (size - 1):
            raise RingUnavailable(f"its size, {size} bytes, is not a power-of-two number of pages")
        self._control = _map(fd, PAGE, mmap.PROT_READ | mmap.PROT_WRITE, 0)
        try:
            self._data = _map(fd, PAGE + 2 * size, mmap.PROT_READ, PAGE)
        except RingUnavailable:
            self._control.close()
            raise
        self._consumer = memoryview(self._control).cast("Q")
        self._producer = memoryview(self._data).cast("Q")
        self._words = memoryview(self._data).cast("I")
        self._mask = size - 1

    @property
    def consumer_pos(self) -> int:
        """Bytes consumed since the map was created."""
        return int(self._consumer[0])

    @property
    def producer_pos(self) -> int:
        """Bytes reserved by producers since the map was created."""
        return int(self._producer[0])

    def drain(self, limit: int) -> list[bytes]:
        """Up to `limit` records, oldest first, copied out of the ring. Discarded records are
        skipped; a record still being written ends the drain (the next drain reads it).

        consumer_pos is stored once, at the end: every record is already a copy by then, so the
        kernel overwrites nothing we read, and `limit` bounds how much space it waits for (a
        store per record, as libbpf does, cost ~8% of the loop)."""
        data, words, mask = self._data, self._words, self._mask
        records: list[bytes] = []
        append = records.append
        pos, end = self._consumer[0], self._producer[0]
        while pos < end:
            at = PAGE + (pos & mask)
            length = words[at >> 2]
            if length >= DISCARD:  # a flag is set: lengths stay below 2**30
                if length & BUSY:
                    break
                length &= ~DISCARD
            elif len(records) == limit:
                break
            else:
                append(data[at + HEADER : at + HEADER + length])
            pos += (length + HEADER + 7) & ~7
        self._consumer[0] = pos
        return records

    def close(self) -> None:
        """Unmap the ring (idempotent)."""
        for view in (self._consumer, self._producer, self._words):
            view.release()
        self._control.close()
        self._data.close()
