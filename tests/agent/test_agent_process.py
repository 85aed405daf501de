"""The node agent as it runs on a node, end to end: `python -m agent` (real eBPF, mTLS with its
agent certificate) ships to a real runtime service process; a local pod started with
`parallax run` shows up as a profile with its syscalls, execs and opens, attributed to its pod;
a pod that resolves a name (glibc against a resolver on 127.0.0.1:53) and connects to the answer
gets the name on its network peer, and its capability checks with their true counts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from parallax.runtime.v1 import profile_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.runtime.v1 import runtime_service_pb2_grpc as pb_grpc
from parallax.type.v1 import workload_pb2

from servicekit import pki
from servicekit.channels import connect
from servicekit.tls import TlsMaterial
from tests.agent.conftest import ebpf_unavailable
from tests.processes import read_until

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A runtime service and an agent over mTLS; yields the runtime address and the TLS dir."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("node")
    hostname = socket.gethostname()
    pki.init_directory(data / "tls", node=hostname)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    runtime = subprocess.Popen(
        [sys.executable, "-m", "services.runtime"],
        env={
            **base,
            "PARALLAX_LISTEN": "127.0.0.1:0",
            "PARALLAX_DATA": str(data),
            "PARALLAX_TLS_DIR": str(data / "tls" / "runtime"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    agent = None
    try:
        assert runtime.stdout is not None
        address = json.loads(read_until(runtime.stdout, b"\n", timeout=60))["address"]
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent"],
            env={
                **base,
                "PARALLAX_RUNTIME_ADDRESS": address,
                "PARALLAX_NODE_NAME": hostname,
                "PARALLAX_TLS_DIR": str(data / "tls" / f"agent-{hostname}"),
                "PARALLAX_KUBE": "off",
                "PARALLAX_METRICS_PORT": "0",
                "PARALLAX_BATCH_LATENCY": "0.05",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert agent.stderr is not None
        read_until(agent.stderr, b"agent ready", timeout=90)
        threading.Thread(target=agent.stderr.read, daemon=True).start()  # keep the pipe drained
        yield address, data / "tls"
    finally:
        for process in (agent, runtime):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
                for stream in (process.stdout, process.stderr):
                    if stream is not None:
                        stream.close()


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
