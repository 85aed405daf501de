"""Syscall tax of the agent's sys_enter program on `dd if=/dev/zero of=/dev/null bs=1 count=N`
(2 syscalls per byte), interleaved runs, medians, as a ratio to untraced: nothing learning (the
program detached), another workload learning (attached, this cgroup not in the map), and an
empty raw sys_enter program as the floor.
Needs root and BCC: `.venv/bin/python bench/agent_overhead.py [COUNT [ROUNDS]]`."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from agent.localpod import local_pod
from agent.probes.loader import import_bcc
from agent.record import session

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
EMPTY = b"int on_sys_enter(struct bpf_raw_tracepoint_args *ctx) { return 0; }"
DD = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={COUNT}", "status=none"]


def run_dd() -> float:
    start = time.perf_counter()
    subprocess.run(DD, check=True)
    return time.perf_counter() - start


def main() -> None:
    bcc = import_bcc()
    empty = bcc.BPF(text=EMPTY)
    with session(groups=()) as s, local_pod("bench", "learner") as learner:
        setups: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "untraced": (lambda: None, lambda: None),
            "nothing learning": (lambda: None, lambda: None),
            "another learning": (
                lambda: s.control.learn(learner.cgroup_id),
                lambda: s.control.forget(learner.cgroup_id),
            ),
            "empty sys_enter": (
                lambda: empty.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_sys_enter"),
                lambda: empty.detach_raw_tracepoint(tp=b"sys_enter"),
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(ROUNDS):
            for name, (setup, teardown) in setups.items():
                setup()
                times[name].append(run_dd())
                teardown()
    empty.cleanup()
    base = statistics.median(times["untraced"])
    print(f"dd bs=1 count={COUNT} ({2 * COUNT} syscalls), {ROUNDS} interleaved rounds, medians:")
    for name, samples in times.items():
        med = statistics.median(samples)
        extra_ns = (med - base) / (2 * COUNT) * 1e9
        print(f"  {name:18s} {med:7.3f} s  x{med / base:.2f}  {extra_ns:+6.0f} ns/syscall")


if __name__ == "__main__":
    main()
