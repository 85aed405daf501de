"""Benchmark of the runtime service's ingest: a synthetic agent streams realistic batches into a
real `python -m services.runtime` process (SQLite, one transaction per batch) and this prints the
sustained events/s, the service's CPU microseconds per event (medians over runs), and the p99
latency from sending an alerting event to its alert arriving on WatchAlerts. It first prints
how long a plain Python loop takes, a yardstick of this machine's speed at the time.

    .venv/bin/python bench/runtime_ingest.py [--batches 30] [--batch-size 10000] [--runs 3]
        [--mix agent|template] [--wire records|events]

`--wire records` (the default, what the agent sends) packs each batch's events as EventRecords
with tests/packing.py; `--wire events` sends one Event message per event. Batches are as large
as the agent's default PARALLAX_BATCH_EVENTS (10,000), which is what a busy node sends; smaller
batches cost more per event (each is a transaction and a stream message, and fewer of its events
repeat within it): `--batches 60 --batch-size 5000` (the default before session 5) and
`--batches 300 --batch-size 1000` show how much.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2

from servicekit.channels import connect
from tests.packing import RECORD, packed
from tests.processes import read_until

WORKLOADS = [("shop", "cart"), ("shop", "checkout"), ("pay", "ledger"), ("web", "frontend")]
PODS_PER_WORKLOAD = 4
T0 = int(time.time())


def attribution(namespace: str, name: str, pod: int) -> event_pb2.Attribution:
    pod_name = f"{name}-{pod}"
    return event_pb2.Attribution(
        workload=workload_pb2.WorkloadRef(
            namespace=namespace, kind="Deployment", name=name, pod=pod_name, container=name
        ),
        pod_uid=f"uid-{namespace}-{pod_name}",
        container_id=f"{pod:064x}",
        image=f"{namespace}/{name}:1",
        image_digest="sha256:" + name.encode().hex().ljust(64, "0")[:64],
    )


ATTRIBUTIONS = [attribution(ns, n, p) for ns, n in WORKLOADS for p in range(PODS_PER_WORKLOAD)]


class Container:
    """One container of the synthetic node: its attribution, cgroup and processes."""

    def __init__(self, index: int, rng: random.Random) -> None:
        namespace = WORKLOADS[index // PODS_PER_WORKLOAD][0]
        self.attribution = ATTRIBUTIONS[index]
        self.cgroup_id = 5000 + index
        self.server = 1000 + index * 1000  # the main process
        self.workers = [self.server + 1 + k for k in range(3)]  # long-lived worker processes
        self.next_pid = self.server + 100
        self.children: list[int] = []
        self.db = f"10.0.{index // PODS_PER_WORKLOAD}.{10 + index % 3}"
        self.db_name = f"db.{namespace}.svc.cluster.local"
        self.clients = [f"10.1.{index}.{k}" for k in range(1, 60)]
        self.rng = rng

    def header(self, pid: int, ppid: int, at: float, comm: str = "server") -> dict[str, object]:
        whole = int(at)
        return {
            "monotonic_ns": int((at - T0 + 1000) * 1e9),
            "event_time": Timestamp(seconds=whole, nanos=int((at - whole) * 1e9)),
            "cgroup_id": self.cgroup_id,
            "attribution": self.attribution,
            "pid": pid,
            "ppid": ppid,
            "uid": 1000,
            "comm": comm,
        }

    def event(self, at: float) -> event_pb2.Event:
        """The next event of this container: mostly repeated behaviour of its long-lived
        processes (config and /proc reads, database connections from fresh ephemeral ports, DNS
        lookups, client connections), with new per-request temp files, new clients and
        short-lived helper processes (fork, exec, exit) as a real server shows."""
        roll, rng = self.rng.random(), self.rng
        pid = rng.choice([self.server, *self.workers])
        if roll < 0.30:
            path = rng.choice(
                ["/etc/app.conf", f"/proc/{pid}/stat", "/usr/lib/libssl.so.3", "/etc/hosts"]
            )
            opened = event_pb2.FileOpen(path=path, return_value=3, count=1)
            return event_pb2.Event(**self.header(pid, self.server, at), file_open=opened)
        if roll < 0.36:
            path = f"/tmp/upload-{rng.getrandbits(40):010x}"
            opened = event_pb2.FileOpen(path=path, flags=0o101, mode=0o600, return_value=5, count=1)
            return event_pb2.Event(**self.header(pid, self.server, at), file_open=opened)
        if roll < 0.56:
            flow = event_pb2.NetworkFlow(
                direction=1,
                protocol=1,
                family=1,
                remote_address=self.db,
                remote_port=5432,
                local_address="10.2.0.1",
                local_port=rng.randrange(32768, 61000),
                count=1,
            )
            return event_pb2.Event(**self.header(pid, self.server, at), network_flow=flow)
        if roll < 0.68:
            flow = event_pb2.NetworkFlow(
                direction=2,
                protocol=1,
                family=1,
                remote_address=rng.choice(self.clients),
                remote_port=rng.randrange(32768, 61000),
                local_address="10.2.0.1",
                local_port=8080,
                count=1,
            )
            return event_pb2.Event(**self.header(pid, self.server, at), network_flow=flow)
        if roll < 0.78:
            dns = event_pb2.DnsQuery(
                query_name=self.db_name, query_type="A", answer_addresses=[self.db]
            )
            return event_pb2.Event(**self.header(pid, self.server, at), dns_query=dns)
        if roll < 0.80:
            cap = event_pb2.CapabilityUse(
                capability_name="CAP_NET_BIND_SERVICE", capability_number=10, allowed=True, count=1
            )
            return event_pb2.Event(**self.header(self.server, 1, at), capability_use=cap)
        return self.process_event(at)

    def process_event(self, at: float) -> event_pb2.Event:
        """A helper's life: the server forks it, it execs the health check, it exits."""
        rng = self.rng
        if self.children and rng.random() < 0.5:
            child = self.children.pop(0)
            if rng.random() < 0.5:
                script = ["/bin/sh", "-c", f"/app/healthcheck --port 8080 --id {child}"]
                exe = event_pb2.Exec(path="/bin/sh", argv=script, stdin_kind=2, stdout_kind=2)
                self.children.append(child)
                return event_pb2.Event(**self.header(child, self.server, at, "sh"), exec=exe)
            ended = event_pb2.ProcessExit(exit_code=0)
            return event_pb2.Event(**self.header(child, self.server, at, "sh"), process_exit=ended)
        child, self.next_pid = self.next_pid, self.next_pid + 1
        self.children.append(child)
        fork = event_pb2.ProcessFork(child_pid=child)
        return event_pb2.Event(**self.header(self.server, 1, at), process_fork=fork)


def template_event(i: int) -> event_pb2.Event:
    """A realistic mix: opens, flows, DNS, forks/exits, execs, capability checks."""
    kind = i % 20
    common = {
        "event_time": Timestamp(seconds=T0, nanos=i % 1_000_000_000),
        "cgroup_id": 5000 + i % len(ATTRIBUTIONS),
        "attribution": ATTRIBUTIONS[i % len(ATTRIBUTIONS)],
        "pid": 100 + i % 50,
        "ppid": 1,
        "uid": 1000,
        "comm": "server",
    }
    if kind < 8:
        path = ["/etc/app.conf", f"/proc/{100 + i % 50}/stat", "/usr/lib/libssl.so.3"][i % 3]
        return event_pb2.Event(
            **common, file_open=event_pb2.FileOpen(path=path, return_value=3, count=1)
        )
    if kind < 12:
        flow = event_pb2.NetworkFlow(
            direction=1,
            protocol=1,
            family=1,
            remote_address=f"10.0.{i % 4}.{i % 7}",
            remote_port=5432,
            count=1,
        )
        return event_pb2.Event(**common, network_flow=flow)
    if kind < 14:
        dns = event_pb2.DnsQuery(
            query_name="db.pay.svc.cluster.local", query_type="A", answer_addresses=["10.0.1.1"]
        )
        return event_pb2.Event(**common, dns_query=dns)
    if kind < 17:
        return event_pb2.Event(
            **common, process_fork=event_pb2.ProcessFork(child_pid=200 + i % 100)
        )
    if kind < 19:
        return event_pb2.Event(**common, process_exit=event_pb2.ProcessExit(exit_code=0))
    return event_pb2.Event(
        **common, exec=event_pb2.Exec(path="/app/server", argv=["/app/server", "--port", "8080"])
    )


def marker(index: int, run: int) -> event_pb2.Event:
    """An event that raises a new alert: a mining-pool port at a unique address."""
    flow = event_pb2.NetworkFlow(
        direction=1,
        protocol=1,
        family=1,
        remote_address=f"198.{51 + run}.{index // 250}.{index % 250}",
        remote_port=3333,
        count=1,
    )
    return event_pb2.Event(
        event_time=Timestamp(seconds=T0),
        cgroup_id=5000,
        attribution=ATTRIBUTIONS[0],
        pid=100,
        ppid=1,
        network_flow=flow,
    )


def batches(count: int, size: int, run: int, mix: str) -> list[pb.ReportEventsRequest]:
    """`count` batches of `size` events; the last event of each raises a new alert. The `agent`
    mix is what one agent sends: 200 ms of a busy node per batch, its containers' events
    interleaved, fresh pids, ports, temp files and times; the `template` mix (the first version
    of this benchmark) repeats one batch in which every pid acts in every container."""
    rng = random.Random(run)
    containers = [Container(i, rng) for i in range(len(ATTRIBUTIONS))]
    template = [template_event(i) for i in range(size)]
    built = []
    for sequence in range(1, count + 1):
        start = T0 + run * 3600 + sequence * 0.2
        if mix == "template":
            events = template[:-1]
        else:
            events = [rng.choice(containers).event(start + i * 0.2 / size) for i in range(size - 1)]
        events.append(marker(sequence, run))
        built.append(
            pb.ReportEventsRequest(
                agent_id="bench-agent",
                node_name="bench-node",
                boot_id="boot",
                session_id=f"run-{run}",
                sequence=sequence,
                agent_version="bench",
                kernel_release="6.1",
                arch=1,
                events=events,
            )
        )
    return built


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch(stub: pb_grpc.RuntimeServiceStub, seen: dict[str, float], ready: threading.Event) -> None:
    try:
        for change in stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=3600):
            if change.change_type == 2:
                ready.set()
            elif change.change_type == 3 and change.alert.rule_id == "R0006":  # ADDED
                address = change.alert.evidence.get("remote_address", "")
                seen.setdefault(address, time.perf_counter())
    except grpc.RpcError:
        return  # the channel closes at the end of the run


def _marker(request: pb.ReportEventsRequest) -> str:
    """The "address:port" of the marker flow that ends `request`."""
    if request.records.data:
        record = RECORD.unpack_from(request.records.data, len(request.records.data) - RECORD.size)
        strings = request.records.strings
        return f"{strings[record[8]]}:{record[11]}"
    flow = request.events[-1].network_flow
    return f"{flow.remote_address}:{flow.remote_port}"


def run_once(
    address: str, pid: int, requests: list[pb.ReportEventsRequest], size: int
) -> tuple[float, float, float]:
    """Stream `requests` of `size` events each; the events/s, service CPU us/event and p99
    alert latency. Each request's marker is its last event (a record when packed)."""
    markers = [_marker(request) for request in requests]
    with connect(address, timeout=600) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        seen: dict[str, float] = {}
        ready = threading.Event()
        threading.Thread(target=watch, args=(stub, seen, ready), daemon=True).start()
        ready.wait(30)
        sent: dict[str, float] = {}

        def stream():  # type: ignore[no-untyped-def]
            for request, marker in zip(requests, markers, strict=True):
                sent[marker] = time.perf_counter()
                yield request

        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        acks = sum(1 for _ in stub.ReportEvents(stream(), timeout=600))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds(pid) - cpu0
        deadline = time.monotonic() + 10
        while len(seen) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the watch to drain, not synchronisation of the service
    events = acks * size
    latencies = sorted(seen[k] - sent[k] for k in sent if k in seen)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return events / wall, cpu / events * 1e6, p99


def reference_loop() -> float:
    """Seconds a plain Python loop of 10M additions takes here (best of 3): this machine's speed
    moves by 20% or more from one hour to the next, so each result says what it was then."""
    best = float("inf")
    for _ in range(3):
        start, total = time.perf_counter(), 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mix", choices=["agent", "template"], default="agent")
    parser.add_argument("--wire", choices=["records", "events"], default="records")
    args = parser.parse_args()
    print(f"machine: a 10M-step Python loop takes {reference_loop():.3f} s (best of 3)", flush=True)
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "PARALLAX_LISTEN": "127.0.0.1:0",
            "PARALLAX_DATA": data,
            "PARALLAX_INSECURE": "true",
            "PARALLAX_LOG_LEVEL": "WARNING",
        }
        env.pop("DATABASE_URL", None)
        env.pop("PARALLAX_TLS_DIR", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "services.runtime"],
            env=env,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            assert process.stdout is not None
            address = json.loads(read_until(process.stdout, b"\n", 60).split(b"\n")[0])["address"]
            results = []
            for run in range(args.runs):
                requests = batches(args.batches, args.batch_size, run, args.mix)
                if args.wire == "records":
                    requests = [packed(r) for r in requests]
                results.append(run_once(address, process.pid, requests, args.batch_size))
                rate, cpu, p99 = results[-1]
                print(
                    f"run {run + 1}: {rate:,.0f} events/s, {cpu:.2f} us CPU/event, "
                    f"p99 alert latency {p99 * 1000:.1f} ms"
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(
        f"median: {statistics.median(r[0] for r in results):,.0f} events/s sustained, "
        f"{statistics.median(r[1] for r in results):.2f} us service CPU per event, "
        f"p99 event-to-WatchAlerts {statistics.median(r[2] for r in results) * 1000:.1f} ms "
        f"({args.batches} batches x {args.batch_size} events, {args.mix} mix, "
        f"{args.wire} on the wire, SQLite, "
        "one transaction per batch)"
    )


if __name__ == "__main__":
    main()
