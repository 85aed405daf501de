"""The demo's platform side: the four services (cli.supervisor.Stack, mTLS), the node agent as a
child process, the client stubs, the posture scan of the shop's manifests and the final
collection of the report. Shop (cli/demo_shop.py) drives the sample app on top of it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
from parallax.correlator.v1 import correlator_service_pb2_grpc as co_grpc
from parallax.policygen.v1 import policygen_service_pb2_grpc as pg_grpc
from parallax.posture.v1 import posture_service_pb2 as po
from parallax.posture.v1 import posture_service_pb2_grpc as po_grpc
from parallax.posture.v1 import scan_pb2
from parallax.runtime.v1 import runtime_service_pb2_grpc as rt_grpc
from parallax.type.v1 import source_pb2
from rich.console import Console
from rich.markup import escape

from cli.report_collect import Collector
from cli.report_model import Report
from cli.supervisor import Stack
from servicekit.channels import connect
from servicekit.tls import TlsMaterial

SHOP = Path(__file__).resolve().parents[1] / "examples" / "shop"
MANIFESTS = SHOP / "k8s"
AGENT_READY_SECONDS = 180.0
TIMEOUT = 60.0


def manifests() -> list[source_pb2.Manifest]:
    """The shop's manifests, with URIs relative to examples/shop/k8s."""
    return [
        source_pb2.Manifest(uri=path.name, content=path.read_bytes())
        for path in sorted(MANIFESTS.glob("*.yaml"))
    ]


def _started(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    return ""


def descendants(root: int) -> list[tuple[int, str]]:
    """Every live descendant of `root` as (pid, start time), to tell a reused pid apart."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append((pid, _started(pid)))
        todo += children.get(pid, [])
    return found


def reap(processes: list[tuple[int, str]]) -> None:
    """Kill what a stopped service left running. policygen does not kill a seccomp
    verification's command when it is stopped mid-run (services/policygen/verify_seccomp.py
    _run): the command, often a server, would outlive the demo."""
    for pid, started in processes:
        if started and _started(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Run:
    """One demo run: data directory, console, the story told so far and what was started."""

    def __init__(self, data: Path, window: float, console: Console) -> None:
        self.data, self.window, self.console = data, window, console
        self.story: list[str] = []
        self.stack = Stack(
            data,
            base_port=0,
            env={
                **os.environ,
                "PARALLAX_TICK_SECONDS": "0.5",  # learning windows end on time in a short demo
                "PARALLAX_MANIFEST_ROOT": str(MANIFESTS),  # the correlator reads mount paths
                "PARALLAX_LOOP_SECONDS": "2",  # the correlator's feedback loop keeps up
            },
        )
        self.channels: dict[str, grpc.Channel] = {}
        self.agent: subprocess.Popen[bytes] | None = None
        self.agent_ready = threading.Event()
        self.learning_open = threading.Event()
        self.registry = data / "pods"  # the pod registry this demo's agent reads

    def say(self, line: str) -> None:
        """Print one step of the story and keep it for the report."""
        self.story.append(line)
        self.console.print(f"[bold cyan]>[/bold cyan] {escape(line)}")

    @contextlib.contextmanager
    def services(self) -> Iterator[None]:
        """The four services for the duration of the block, then stopped."""
        self.stack.start(timeout=60)
        try:
            tls = TlsMaterial.load(self.stack.tls_dir / "cli")
            for name, child in self.stack.children.items():
                credentials = tls.channel_credentials()
                self.channels[name] = connect(
                    child.address, timeout=TIMEOUT, credentials=credentials
                )
            self.say("started posture, runtime, policygen and correlator over mutual TLS")
            yield
        finally:
            for opened in self.channels.values():
                opened.close()
            self.channels.clear()
            left = [d for c in self.stack.children.values() for d in descendants(c.process.pid)]
            self.stack.stop()
            reap(left)

    @property
    def posture(self) -> po_grpc.PostureServiceStub:
        """The posture stub."""
        return po_grpc.PostureServiceStub(self.channels["posture"])

    @property
    def runtime(self) -> rt_grpc.RuntimeServiceStub:
        """The runtime stub."""
        return rt_grpc.RuntimeServiceStub(self.channels["runtime"])

    @property
    def policygen(self) -> pg_grpc.PolicygenServiceStub:
        """The policygen stub."""
        return pg_grpc.PolicygenServiceStub(self.channels["policygen"])

    @property
    def correlator(self) -> co_grpc.CorrelatorServiceStub:
        """The correlator stub."""
        return co_grpc.CorrelatorServiceStub(self.channels["correlator"])

    def scan(self) -> None:
        """Submit the shop's manifests to posture (CreateScan) and wait for the findings."""
        request = po.CreateScanRequest(
            manifests=scan_pb2.ManifestSet(manifests=manifests()), wait_for_completion=True
        )
        scan = self.posture.CreateScan(request, timeout=TIMEOUT).scan
        c = scan.finding_counts
        self.say(
            f"scanned examples/shop/k8s: {scan.objects_scanned} objects, "
            f"{c.critical_count} critical, {c.high_count} high, {c.medium_count} medium and "
            f"{c.low_count} low findings"
        )

    @contextlib.contextmanager
    def node_agent(self) -> Iterator[None]:
        """The eBPF agent as a child process shipping to runtime; stopped after the block."""
        hostname = socket.gethostname()
        base = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent"],
            env={
                **base,
                "PARALLAX_RUNTIME_ADDRESS": self.stack.children["runtime"].address,
                "PARALLAX_NODE_NAME": hostname,
                "PARALLAX_TLS_DIR": str(self.stack.tls_dir / f"agent-{hostname}"),
                "PARALLAX_KUBE": "off",
                "PARALLAX_METRICS_PORT": "0",
                "PARALLAX_METRICS_ADDRESS": "127.0.0.1",
                "PARALLAX_BATCH_LATENCY": "0.05",
                # Syscall sets reported every second: well inside the demo's short window.
                "PARALLAX_REPORT_SECONDS": "1",
                "PARALLAX_POD_REGISTRY": str(self.registry),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        log = (self.data / "logs" / "agent.log").open("ab")
        threading.Thread(target=self._drain, args=(self.agent.stderr, log), daemon=True).start()
        try:
            yield
        finally:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
            log.close()

    def _drain(self, stream: IO[bytes] | None, log: IO[bytes]) -> None:
        assert stream is not None
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                log.write(line)
                log.flush()
                if b"agent ready" in line:
                    self.agent_ready.set()
                if b"a workload is in its learning window" in line:
                    self.learning_open.set()
        stream.close()

    def wait_agent(self) -> None:
        """Block until the agent reports its probes attached; fail if it exits first."""
        assert self.agent is not None
        deadline = threading.Event()
        for _ in range(int(AGENT_READY_SECONDS * 4)):
            if self.agent_ready.is_set():
                self.say("the eBPF agent attached its probes and ships to runtime")
                return
            if self.agent.poll() is not None:
                raise RuntimeError(
                    f"the agent exited ({self.agent.returncode}); see logs/agent.log"
                )
            deadline.wait(0.25)
        raise TimeoutError("the agent did not attach its probes in time; see logs/agent.log")

    def wait_learning(self) -> None:
        """Block until the agent has taken up the learning targets (it polls the runtime every
        agent.learning.POLL_SECONDS), so that pods started next are learned from their first
        syscall and their profiles see the start."""
        if not self.learning_open.wait(AGENT_READY_SECONDS):
            raise TimeoutError("the agent did not open a learning window; see logs/agent.log")
        self.say("the agent took up the learning targets: new containers are learned from start")

    def collect(self) -> Report:
        """The report from the services, for the shop namespace."""
        tls = TlsMaterial.load(self.stack.tls_dir / "cli")
        addresses = {name: child.address for name, child in self.stack.children.items()}
        found = Collector(addresses, tls).collect("shop")
        found.title = "Parallax demo: the shop"
        found.story = list(self.story)
        return found

    def posture_only(self) -> Report:
        """The half that needs no root: services, the manifest scan, the report."""
        with self.services():
            self.scan()
            self.say("skipped the runtime half: eBPF, local pods and seccomp enforcement need root")
            found = self.collect()
        found.pending["runtime half"] = "needs root: run `sudo make demo`"
        return found
