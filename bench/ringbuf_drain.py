"""Records per second one Python thread drains from a BPF ring buffer: BCC's per-record ctypes
callback (the old path) against the mapped reader (agent.probes.ringbuf), both through
agent.probes.consumer.Consumer with the same sink (list.append), the same program and ring.

Per round and path: a tracepoint program (task:task_prctl_unknown, triggered by an unknown prctl
option from this process) fills the agent-sized ring (4096 pages) with N records of RECORD bytes,
then one `consume()` is timed; the fill is not. The paths alternate; medians over ROUNDS.
Needs root and BCC: `.venv/bin/python bench/ringbuf_drain.py [ROUNDS [N [RECORD]]]`."""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time

from agent.localpod import cgroup2_mount
from agent.probes.consumer import Consumer
from agent.probes.loader import Loader

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
RECORD = int(sys.argv[3]) if len(sys.argv) > 3 else 64  # bytes, a multiple of 8, 8..256
RING_PAGES = 4096
OPTION = 0x52425547
PER_CALL = 250
PROGRAM = """
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(failures, u64, 1);
struct record { u64 seq; u64 pad[RECORD / 8 - 1]; };

TRACEPOINT_PROBE(task, task_prctl_unknown) {
    if (args->option != OPTION || bpf_get_current_pid_tgid() >> 32 != OWNER)
        return 0;
    struct record r = {};
    for (u32 i = 0; i < PER_CALL && i < args->arg2; i++) {
        r.seq = args->arg3 + i;
        if (events.ringbuf_output(&r, sizeof(r), BPF_RB_NO_WAKEUP)) {
            int zero = 0;
            u64 *n = failures.lookup(&zero);
            if (n)
                __sync_fetch_and_add(n, 1);
        }
    }
    return 0;
}
"""

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


def fill(count: int) -> None:
    """Submit `count` records (committed when each prctl returns)."""
    for first in range(0, count, PER_CALL):
        libc.prctl(OPTION, min(PER_CALL, count - first), first, 0, 0)


def timed_drain(consumer: Consumer, got: list[bytes], count: int) -> float:
    """Records per second of one consume() of `count` records."""
    got.clear()
    fill(count)
    start = time.perf_counter()
    consumer.consume()
    elapsed = time.perf_counter() - start
    if len(got) != count or any(len(raw) != RECORD for raw in got[:: count // 100 or 1]):
        raise SystemExit(f"drained {len(got)} of {count} records")
    return count / elapsed


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("needs root (real eBPF)")
    count = min(N, RING_PAGES * 4096 * 9 // 10 // (RECORD + 8))  # what the ring holds
    defines = f"#define OPTION {OPTION}\n#define OWNER {os.getpid()}\n"
    defines += f"#define RECORD {RECORD}\n#define PER_CALL {PER_CALL}\n"
    loader = Loader(cgroup2_mount(), ring_pages=RING_PAGES, text=defines + PROGRAM)
    got: list[bytes] = []
    # Both read the same ring, one after the other: BCC's libbpf reader and the mapped reader
    # each load consumer_pos from the shared consumer page, so each resumes where the other
    # stopped.
    paths = {
        "bcc callback": Consumer(loader, got.append, mapped=False),
        "mapped": Consumer(loader, got.append),
    }
    rates: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for _ in range(ROUNDS):
            for name, consumer in paths.items():
                rates[name].append(timed_drain(consumer, got, count))
        failures = loader.table("failures")[ctypes.c_int(0)].value
    finally:
        loader.close()
    print(f"{ROUNDS} rounds of {count} records of {RECORD} bytes, one thread, medians:")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        spread = ", ".join(f"{r / 1e6:.2f}" for r in rates[name])
        print(f"  {name:13s} {rate / 1e6:5.2f} M records/s ({1e9 / rate:4.0f} ns each; {spread})")
    print(f"  ratio mapped/bcc {medians['mapped'] / medians['bcc callback']:.2f}x")
    if failures:
        raise SystemExit(f"{failures} records did not fit in the ring")


if __name__ == "__main__":
    main()
