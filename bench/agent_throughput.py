"""Events per second from the kernel to the runtime service before the first drop, with the CPU
each event costs (agent + runtime, from /proc/<pid>/stat utime+stime) and the agent's peak RSS.

Per run: a real runtime process and a real agent process (plaintext on loopback, learning off so
no sys_enter tax); a generator (C, built with `cc`) in its own local-pod cgroup makes distinct
failed opens (one event each, never de-duplicated in the kernel; the runtime merges them into one
profile item by path pattern) plus one exec per 1000 opens, at increasing rates for STEP seconds
each. A step passes when the runtime's node counts every generated event and no drop counter
moved; the run's throughput is the fastest passing step. The failing step is left to settle and
says how many of its events were delivered or counted as dropped: all of them, when nothing is
lost silently. Medians over RUNS runs.
Needs root and BCC: `.venv/bin/python bench/agent_throughput.py [RUNS [STEP [RATES]]]`,
RATES comma-separated, e.g. `3 3 10000,20000,40000`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from parallax.runtime.v1 import blind_spot_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1.runtime_service_pb2_grpc import RuntimeServiceStub

from agent.localpod import local_pod
from servicekit.channels import connect
from tests.processes import read_until

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
STEP = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
DEFAULT_RATES = "10000,20000,40000,80000,160000,320000"
RATES = [int(r) for r in (sys.argv[3] if len(sys.argv) > 3 else DEFAULT_RATES).split(",")]
NODE = "bench-node"
DRAIN = 30.0  # seconds the runtime gets to count a step's events after the generator ends
TICK = os.sysconf("SC_CLK_TCK")
# The load: distinct failed opens paced in 5 ms slices plus one spawn of /bin/true per 1000
# opens, written in C so that the generator's own CPU (it shares the 2 cores with the agent and
# the runtime) is the syscalls' and not an interpreter's; prints "opens spawns seconds cpu", cpu
# being its own and its children's user + system seconds: the syscalls and the probes they run.
GENERATOR_C = r"""
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    long rate = atol(argv[1]);
    double seconds = atof(argv[2]), start = now(), t;
    long opens = 0, spawns = 0;
    char path[512];
    char *child[] = {"true", NULL};
    while ((t = now()) - start < seconds) {
        long due = (long)((t - start) * rate) + rate / 200;
        if (due > opens + 2000)
            due = opens + 2000;
        while (opens < due) {
            snprintf(path, sizeof path, "%s/%ld", argv[3], opens);
            int fd = open(path, O_RDONLY);
            if (fd >= 0)
                close(fd);
            if (++opens % 1000 == 0) {
                pid_t pid;
                if (posix_spawn(&pid, "/bin/true", NULL, NULL, child, environ) == 0)
                    spawns++;
            }
        }
        double wait = start + (double)due / rate - now();
        if (wait > 0) {
            struct timespec w = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&w, NULL);
        }
    }
    while (wait(NULL) > 0) {
    }
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    double cpu = self.ru_utime.tv_sec + self.ru_stime.tv_sec + children.ru_utime.tv_sec +
                 children.ru_stime.tv_sec + (self.ru_utime.tv_usec + self.ru_stime.tv_usec +
                 children.ru_utime.tv_usec + children.ru_stime.tv_usec) * 1e-6;
    printf("%ld %ld %f %f\n", opens, spawns, now() - start, cpu);
    return 0;
}
"""


def generator(workdir: Path) -> Path:
    """Compile the generator with the system C compiler."""
    source, binary = workdir / "generator.c", workdir / "generator"
    source.write_text(GENERATOR_C)
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


@dataclass
class Step:
    """One rate step of one run."""

    rate: int
    generated: int
    achieved: float
    delivered: int
    dropped: dict[str, int]
    agent_us: float
    runtime_us: float
    generator_us: float  # the generator's own CPU per generated event: syscalls and probes
    agent_rss: float  # the agent's resident set (MB) once the step was counted
    accounted: int  # delivered or counted as dropped, once the counts settled

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per delivered event, agent and runtime together."""
        return self.agent_us + self.runtime_us

    @property
    def passed(self) -> bool:
        """Every event arrived and nothing was dropped."""
        return not self.dropped and self.delivered >= self.generated


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> tuple[float, float]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), in MB."""
    found = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(found["VmRSS"].split()[0]) / 1024, int(found["VmHWM"].split()[0]) / 1024


def node_counts(stub: RuntimeServiceStub) -> tuple[int, dict[str, int]]:
    """(events received, events dropped by source) for the bench node, as the runtime has them."""
    for node in stub.ListNodes(pb.ListNodesRequest(page_size=1000), timeout=10).nodes:
        if node.node_name == NODE or node.name.endswith(NODE):
            drops: dict[str, int] = {}
            for d in node.drop_counters:
                source = blind_spot_pb2.DropSource.Name(d.source).removeprefix("DROP_SOURCE_")
                drops[source.lower()] = drops.get(source.lower(), 0) + d.dropped_total
            return node.events_received, drops
    return 0, {}


def start(data: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    """A runtime and an agent shipping to it; returns both and the runtime's address."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    base["PARALLAX_INSECURE"] = "true"
    runtime = subprocess.Popen(
        [sys.executable, "-m", "services.runtime"],
        env={**base, "PARALLAX_LISTEN": "127.0.0.1:0", "PARALLAX_DATA": str(data)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert runtime.stdout is not None
    address = json.loads(read_until(runtime.stdout, b"\n", timeout=60))["address"]
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent"],
        env={
            **base,
            "PARALLAX_RUNTIME_ADDRESS": address,
            "PARALLAX_NODE_NAME": NODE,
            "PARALLAX_KUBE": "off",
            "PARALLAX_METRICS_PORT": "0",
            "PARALLAX_LEARN_NEW": "false",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert agent.stderr is not None
    read_until(agent.stderr, b"agent ready", timeout=90)
    agent.stderr.close()  # later log lines would block on a full pipe; the agent logs little
    return runtime, agent, address


def step(
    stub: RuntimeServiceStub, pod: object, rate: int, pids: tuple[int, int], binary: Path
) -> Step:
    """Generate at `rate` for STEP seconds; wait for the runtime to count it all."""
    received0, dropped0 = node_counts(stub)
    cpu0 = [cpu_seconds(p) for p in pids]
    base = f"/nonexistent/{rate}-{time.monotonic_ns()}"
    proc = pod.spawn(  # type: ignore[attr-defined]
        [str(binary), str(rate), str(STEP), base], stdout=subprocess.PIPE
    )
    out, _ = proc.communicate(timeout=STEP + 60)
    opens, spawns, elapsed, generator_cpu = out.split()
    generated = int(opens) + 3 * int(spawns)  # an exec is a fork, an exec and an exit
    deadline = time.monotonic() + DRAIN
    received, dropped = node_counts(stub)
    while received - received0 < generated and dropped == dropped0 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the runtime's count, bounded by DRAIN
        received, dropped = node_counts(stub)
    delivered = received - received0
    agent_us, runtime_us = (
        (cpu_seconds(p) - before) * 1e6 / max(delivered, 1)
        for p, before in zip(pids, cpu0, strict=True)
    )
    achieved = int(opens) / float(elapsed)
    lost = {k: n - dropped0.get(k, 0) for k, n in dropped.items() if n > dropped0.get(k, 0)}
    rss = rss_mb(pids[0])[0]
    accounted = delivered + sum(lost.values())
    if lost:  # let the backlog arrive: every generated event is then delivered or counted lost
        previous = None
        while (received, dropped) != previous and time.monotonic() < deadline:
            previous = (received, dropped)
            time.sleep(1.0)  # polling the runtime's counts until they settle, bounded by DRAIN
            received, dropped = node_counts(stub)
        accounted = received - received0 + sum(n - dropped0.get(k, 0) for k, n in dropped.items())
    generator_us = float(generator_cpu) * 1e6 / generated
    return Step(
        rate,
        generated,
        achieved,
        delivered,
        lost,
        agent_us,
        runtime_us,
        generator_us,
        rss,
        accounted,
    )


def run() -> tuple[list[Step], tuple[float, float]]:
    """One run: fresh processes, rates in order until the first failing step."""
    with tempfile.TemporaryDirectory() as tmp:
        binary = generator(Path(tmp))
        runtime, agent, address = start(Path(tmp))
        steps: list[Step] = []
        try:
            with connect(address, timeout=10) as channel, local_pod("bench", "gen") as pod:
                stub = RuntimeServiceStub(channel)
                for rate in RATES:
                    steps.append(step(stub, pod, rate, (agent.pid, runtime.pid), binary))
                    print(f"    {_line(steps[-1])}", flush=True)
                    if not steps[-1].passed:
                        break
            rss = rss_mb(agent.pid)
        finally:
            for process in (agent, runtime):
                process.terminate()
                process.wait(timeout=30)
    return steps, rss


def _line(s: Step) -> str:
    verdict = "ok" if s.passed else "FAILED"
    return (
        f"target {s.rate:>7,}/s: generated {s.achieved:>9,.0f} opens/s, "
        f"{s.delivered:,}/{s.generated:,} events counted, dropped {s.dropped or 0}, "
        f"agent {s.agent_us:.1f} + runtime {s.runtime_us:.1f} us/event "
        f"(generator {s.generator_us:.1f}), "
        f"agent RSS {s.agent_rss:.0f} MB  {verdict}"
        + (
            f" (settled: {s.accounted:,}/{s.generated:,} delivered or counted dropped)"
            if s.dropped
            else ""
        )
    )


def main() -> None:
    best: list[Step] = []
    rss: list[tuple[float, float]] = []
    for i in range(RUNS):
        print(f"run {i + 1}/{RUNS}:", flush=True)
        steps, mb = run()
        passed = [s for s in steps if s.passed]
        if passed:
            best.append(max(passed, key=lambda s: s.achieved))
        rss.append(mb)
    med = statistics.median
    print(f"medians of {RUNS} runs (steps of {STEP:.0f} s, target rates {RATES}):")
    print(
        f"  events/s kernel -> runtime before the first drop: {med(s.achieved for s in best):,.0f}"
    )
    agent_us, runtime_us = med(s.agent_us for s in best), med(s.runtime_us for s in best)
    print(
        f"  CPU per event at that rate: agent {agent_us:.1f} us + runtime {runtime_us:.1f} us"
        f" = {med(s.cpu_us for s in best):.1f} us; the generator's own (its syscalls and the"
        f" probes they run): {med(s.generator_us for s in best):.1f} us"
    )
    print(
        f"  agent RSS at that rate: {med(s.agent_rss for s in best):.0f} MB; at the end of the run"
        f" (after the failing step, whose backlog filled the send buffer):"
        f" {med(r[0] for r in rss):.0f} MB (peak {med(r[1] for r in rss):.0f} MB)"
    )


if __name__ == "__main__":
    main()
