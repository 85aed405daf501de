"""The node agent as it runs on a node, end to end: `python -m agent` (real eBPF, mTLS with its
agent certificate, only the DaemonSet's capabilities) ships to a real runtime service process; a
local pod started with `parallax run` shows up as a profile with its syscalls, execs and opens,
attributed to its pod; a pod that resolves a name (glibc against a resolver on 127.0.0.1:53) and
connects to the answer gets the name on its network peer, and its capability checks with their
true counts; and a SIGTERM ships what the agent still held (the ring, held events, the last
syscall sets and counts) before it exits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
import yaml
from parallax.runtime.v1 import event_pb2, profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2

from agent.localpod import REGISTRY, LocalPod
from servicekit import pki
from servicekit.channels import connect
from servicekit.tls import TlsMaterial
from tests.agent.conftest import ebpf_unavailable
from tests.processes import read_until

pytestmark = pytest.mark.ebpf
AGENT_YAML = Path(__file__).parents[2] / "deploy" / "base" / "agent.yaml"
HOSTNAME = socket.gethostname()
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}


def daemonset_capabilities() -> list[str]:
    """The capabilities deploy/base/agent.yaml adds to the agent's container, as setpriv names
    them (net_admin)."""
    daemonset = next(
        d for d in yaml.safe_load_all(AGENT_YAML.read_text()) if d["kind"] == "DaemonSet"
    )
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return [c.lower() for c in container["securityContext"]["capabilities"]["add"]]


def start_runtime(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A runtime service over mTLS with certificates under `data/tls` (made here for this host);
    returns the process and its address."""
    pki.init_directory(data / "tls", node=HOSTNAME)
    runtime = subprocess.Popen(
        [sys.executable, "-m", "services.runtime"],
        env={
            **BASE_ENV,
            "PARALLAX_LISTEN": "127.0.0.1:0",
            "PARALLAX_DATA": str(data),
            "PARALLAX_TLS_DIR": str(data / "tls" / "runtime"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert runtime.stdout is not None
        return runtime, json.loads(read_until(runtime.stdout, b"\n", timeout=60))["address"]
    except BaseException:
        stop(runtime)
        raise


def start_agent(address: str, tls: Path, **env: str) -> subprocess.Popen[bytes]:
    """`python -m agent` with only the DaemonSet's capabilities (setpriv cuts the bounding set,
    and with it root's effective set), shipping to `address`; returns once its probes are
    attached. Its stderr stays open for the caller (or a drain thread)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    bounding = ",".join(["-all", *(f"+{c}" for c in daemonset_capabilities())])
    agent = subprocess.Popen(
        ["setpriv", f"--bounding-set={bounding}", "--", sys.executable, "-m", "agent"],
        env={
            **BASE_ENV,
            "PARALLAX_RUNTIME_ADDRESS": address,
            "PARALLAX_NODE_NAME": HOSTNAME,
            "PARALLAX_TLS_DIR": str(tls / f"agent-{HOSTNAME}"),
            "PARALLAX_KUBE": "off",
            "PARALLAX_METRICS_PORT": "0",
            "PARALLAX_BATCH_LATENCY": "0.05",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert agent.stderr is not None
        read_until(agent.stderr, b"agent ready", timeout=90)
        return agent
    except BaseException:
        stop(agent)
        raise


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM `process`, wait for its exit (bounded) and close its pipes; its exit code."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=45)
    finally:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A runtime service and an agent over mTLS; yields the runtime address and the TLS dir."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("node")
    runtime, address = start_runtime(data)
    try:
        agent = start_agent(address, data / "tls")
        assert agent.stderr is not None
        opened = WINDOW_OPEN[address] = threading.Event()
        threading.Thread(target=_drain, args=(agent.stderr, opened), daemon=True).start()
        try:
            yield address, data / "tls"
        finally:
            stop(agent)
    finally:
        stop(runtime)


WINDOW_OPEN: dict[str, threading.Event] = {}  # by runtime address: the agent took up targets


def _drain(stream: IO[bytes], opened: threading.Event) -> None:
    """Keep the agent's stderr drained; note when it says a learning window is open."""
    for line in stream:
        if b"a workload is in its learning window" in line:
            opened.set()


def opt_in(address: str, tls_dir: Path, pod: str) -> None:
    """Opt the local pod's workload in to learning, then wait for the agent to take the target
    up (it polls the runtime every agent.learning.POLL_SECONDS), so the pod is learned from its
    first syscall."""
    operator = TlsMaterial.load(tls_dir / "cli")
    workload = workload_pb2.WorkloadRef(namespace="e2e", kind="Pod", name=pod)
    with connect(address, timeout=10, credentials=operator.channel_credentials()) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        stub.SetLearning(pb.SetLearningRequest(workload=workload, enabled=True), timeout=10)
    assert WINDOW_OPEN[address].wait(30), "the agent did not take up the learning target"


def _ran_cat(profile: profile_pb2.Profile) -> bool:
    return bool(profile.syscalls) and any("/cat" in e.path for e in profile.executables)


def profile_of(
    stub: pb_grpc.RuntimeServiceStub,
    pod: str,
    deadline: float,
    done: Callable[[profile_pb2.Profile], bool] | None = None,
) -> pb.GetProfileResponse:
    """Poll GetProfile until the pod's profile holds its cat exec and syscalls (or satisfies
    `done`), within `deadline` (monotonic)."""
    workload = workload_pb2.WorkloadRef(namespace="e2e", kind="Pod", name=pod, container="main")
    request = pb.GetProfileRequest(workload=workload)
    waiter, found = threading.Event(), None
    while True:
        try:
            found = stub.GetProfile(request, timeout=5)
            if (done or _ran_cat)(found.profile):
                return found
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete profile for e2e/{pod} in time; last: {found}"[:3000])
        waiter.wait(0.2)  # the agent ships every 50 ms; re-ask until its batch is stored


def test_local_pod_becomes_a_profile(node: tuple[str, Path]) -> None:
    address, tls_dir = node
    pod = f"cart-{os.getpid()}"
    opt_in(address, tls_dir, pod)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "run",
            "--namespace",
            "e2e",
            "--pod",
            pod,
            "--",
            "sh",
            "-c",
            "cat /etc/hostname > /dev/null; ls /nonexistent 2>/dev/null; true",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    reader = TlsMaterial.load(tls_dir / "cli")
    with connect(address, timeout=10, credentials=reader.channel_credentials()) as channel:
        found = profile_of(pb_grpc.RuntimeServiceStub(channel), pod, time.monotonic() + 60).profile
    names = {s.syscall_name for s in found.syscalls}
    assert {"execve", "openat", "exit_group"} <= names
    assert any(f.path_pattern == "/etc/hostname" for f in found.file_opens)
    assert found.coverage.start_observed
    assert found.coverage.events_dropped == 0


SHOP = "shop.parallax.test"
SHOP_ADDRESS = "127.0.0.9"  # loopback: the connect never leaves the machine
RESOLVE = """
import os, socket, sys
port, owned = int(sys.argv[1]), sys.argv[2]
address = socket.getaddrinfo(sys.argv[3], port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
socket.create_connection((address, port), timeout=10).close()
for _ in range(5):
    os.chown(owned, 1, -1)
"""


def _answer(query: bytes) -> bytes:
    """A-record answers name SHOP_ADDRESS; other types get an empty NOERROR answer."""
    end = query.index(b"\0", 12) + 5
    qtype = int.from_bytes(query[end - 4 : end - 2], "big")
    answers = 1 if qtype == 1 else 0
    header = query[:2] + (0x8180).to_bytes(2, "big") + bytes([0, 1, 0, answers, 0, 0, 0, 0])
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(SHOP_ADDRESS)
    return header + query[12:end] + (record if answers else b"")


@pytest.fixture
def resolver(tmp_path: Path) -> Iterator[Path]:
    """A DNS server on 127.0.0.1:53 until the test ends; yields a resolv.conf naming it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 53))
    except OSError as exc:
        pytest.skip(f"127.0.0.1:53 is busy ({exc})")

    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            data, peer = sock.recvfrom(512)
            if len(data) > 12:
                sock.sendto(_answer(data), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n")
    yield conf
    stopping.set()
    sock.sendto(b"", sock.getsockname())  # wakes the server, which then sees `stopping`
    thread.join(5)
    sock.close()


def test_dns_names_reach_peers_and_counts_add_up(
    node: tuple[str, Path], resolver: Path, tmp_path: Path
) -> None:
    address, tls_dir = node
    pod = f"shop-{os.getpid()}"
    owned = tmp_path / "owned"
    owned.touch()
    # glibc resolves against `resolver` through a private mount of /etc/resolv.conf
    inner = 'mount --bind "$0" /etc/resolv.conf && exec "$1" -c "$2" "$3" "$4" "$5"'
    with socket.create_server((SHOP_ADDRESS, 0)) as server:
        port = server.getsockname()[1]
        argv = ["unshare", "-m", "sh", "-c", inner, str(resolver), sys.executable, RESOLVE]
        argv += [str(port), str(owned), SHOP]
        run = subprocess.run(
            [sys.executable, "-m", "cli", "run", "--namespace", "e2e", "--pod", pod, "--", *argv],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 0, run.stderr.decode()

    def done(profile: profile_pb2.Profile) -> bool:
        peers = [p for p in profile.network_peers if p.address == SHOP_ADDRESS]
        chown = [c for c in profile.capabilities if c.capability_name == "CAP_CHOWN"]
        return bool(peers and peers[0].dns_names and chown and chown[0].allowed_count >= 5)

    reader = TlsMaterial.load(tls_dir / "cli")
    with connect(address, timeout=10, credentials=reader.channel_credentials()) as channel:
        stub = pb_grpc.RuntimeServiceStub(channel)
        found = profile_of(stub, pod, time.monotonic() + 60, done).profile
    peer = next(p for p in found.network_peers if p.address == SHOP_ADDRESS)
    assert list(peer.dns_names) == [SHOP] and peer.port == port
    assert [(d.dns_name, list(d.addresses)) for d in found.dns_names] == [(SHOP, [SHOP_ADDRESS])]
    chown = next(c for c in found.capabilities if c.capability_name == "CAP_CHOWN")
    assert chown.allowed_count == 5  # the first check's event plus the counted repeats


# A pod in two stages: the first is shipped while the agent runs; the second (an open, an exec and
# a DNS query nobody answers) happens just before the agent's SIGTERM. The pod stays alive, so
# no cgroup removal reports its counts.
UNANSWERED = "gone.parallax.test"
STAGES = """
import os, socket, subprocess, sys
subprocess.run(["cat", "/etc/hostname"], stdout=subprocess.DEVNULL, check=True)
for _ in range(5):
    os.chown(sys.argv[1], 1, -1)
print("first", flush=True)
sys.stdin.readline()
open("/etc/os-release").close()
subprocess.run(["true"], check=True)
name = b"".join(bytes([len(p)]) + p for p in sys.argv[2].encode().split(b"."))
query = bytes.fromhex("123401000001000000000000") + name + bytes.fromhex("0000010001")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.sendto(query, ("127.0.0.1", 53))
print("second", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def lone_runtime(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A runtime service that only the test's own agent reports to."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    runtime, address = start_runtime(tmp_path / "node")
    try:
        yield address, tmp_path / "node" / "tls"
    finally:
        stop(runtime)


def _ran(name: str) -> Callable[[profile_pb2.Profile], bool]:
    return lambda profile: any(e.path.endswith(f"/{name}") for e in profile.executables)


def _shipped_at_stop(profile: profile_pb2.Profile) -> bool:
    """The second stage's events (from the ring), the unanswered query (from the DNS pairing)
    and the repeated capability checks' count (from the final count report)."""
    chown = [c for c in profile.capabilities if c.capability_name == "CAP_CHOWN"]
    return (
        _ran("true")(profile)
        and any(f.path_pattern == "/etc/os-release" for f in profile.file_opens)
        and any(d.dns_name == UNANSWERED for d in profile.dns_names)
        and bool(chown)
        and chown[0].allowed_count == 5
    )


def _held_exec(stub: pb_grpc.RuntimeServiceStub) -> int:
    """Unattributed exec events the runtime counts for this node because their pod had no
    metadata (no registry entry)."""
    nodes = stub.ListNodes(pb.ListNodesRequest(), timeout=5).nodes
    me = next(n for n in nodes if n.node_name == HOSTNAME)
    key = (event_pb2.EVENT_TYPE_EXEC, event_pb2.UNATTRIBUTED_REASON_METADATA_UNAVAILABLE)
    return sum(u.count for u in me.unattributed_counts if (u.event_type, u.reason) == key)


def test_a_stop_ships_what_the_agent_still_held(
    lone_runtime: tuple[str, Path], tmp_path: Path
) -> None:
    address, tls_dir = lone_runtime
    # Syscall sets and counts are reported every 10 minutes and unresolved cgroups held for one:
    # only the stop can ship them within the test.
    agent = start_agent(address, tls_dir, PARALLAX_REPORT_SECONDS="600", PARALLAX_HOLD_SECONDS="60")
    stderr, logged = agent.stderr, []
    assert stderr is not None
    drain = threading.Thread(target=lambda: logged.append(stderr.read()), daemon=True)
    drain.start()
    owned, pod = tmp_path / "owned", f"stop-{os.getpid()}"
    owned.touch()
    argv = [sys.executable, "-m", "cli", "run", "--namespace", "e2e", "--pod", pod, "--"]
    run = subprocess.Popen(
        [*argv, sys.executable, "-c", STAGES, str(owned), UNANSWERED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    # A pod whose metadata never appears: its events are held for attribution.
    ghost = LocalPod("e2e", f"ghost-{os.getpid()}")
    ghost.create()
    (REGISTRY / f"{ghost.cgroup_id}.json").unlink()
    try:
        assert run.stdin is not None and run.stdout is not None
        ghost.spawn(["cat", "/etc/hostname"], stdout=subprocess.DEVNULL).wait(timeout=30)
        read_until(run.stdout, b"first", timeout=60)
        reader = TlsMaterial.load(tls_dir / "cli")
        with connect(address, timeout=10, credentials=reader.channel_credentials()) as channel:
            stub = pb_grpc.RuntimeServiceStub(channel)
            profile_of(stub, pod, time.monotonic() + 60, _ran("cat"))
            run.stdin.write(b"go\n")
            run.stdin.flush()
            read_until(run.stdout, b"second", timeout=30)
            agent.send_signal(signal.SIGTERM)  # right after the pod's last actions
            assert agent.wait(timeout=45) == 0
            drain.join(10)
            assert b"not acknowledged" not in b"".join(logged), b"".join(logged)[-3000:]
            profile_of(stub, pod, time.monotonic() + 30, _shipped_at_stop)
            assert _held_exec(stub) >= 1
    finally:
        if run.stdin is not None:
            run.stdin.close()  # the pod's last readline ends, and with it the pod
        run.wait(timeout=30)
        if run.stdout is not None:
            run.stdout.close()
        ghost.destroy()
        if agent.poll() is None:
            stop(agent)
        stderr.close()
