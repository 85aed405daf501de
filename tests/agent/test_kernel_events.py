"""Events of one workload in its own cgroup: the exec tree, opens with failures marked, a loopback
connect/accept, capability checks and a DNS query with its answer."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.localpod import local_pod
from agent.record import Session

pytestmark = pytest.mark.ebpf

CLIENT = r"""
import os, socket, struct
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"\x03api\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(q, ("127.0.0.1", 53)); u.recv(512)
try: open("/nonexistent/file")
except OSError: pass
open("/etc/hostname").close()
os.system("/bin/true")
"""


def _answer(query: bytes) -> bytes:
    header = struct.pack("!HHHHHH", struct.unpack("!H", query[:2])[0], 0x8180, 1, 1, 0, 0)
    question = query[12:]
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("203.0.113.7")
    return header + question + record


@pytest.fixture
def resolver() -> Iterator[None]:
    """A one-answer DNS server on 127.0.0.1:53 (outside the tracked cgroup)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 53))
    except OSError as exc:
        pytest.skip(f"127.0.0.1:53 is busy ({exc})")
    sock.settimeout(20)

    def serve() -> None:
        try:
            data, peer = sock.recvfrom(512)
            sock.sendto(_answer(data), peer)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield
    sock.close()
    thread.join(5)


def test_workload_events(probes: Session, resolver: None) -> None:
    with local_pod("test", "events") as pod:
        probes.control.track(pod.cgroup_id)
        proc = pod.spawn([sys.executable, "-c", CLIENT])
        assert proc.wait(30) == 0
        assert probes.collector.wait_for(
            lambda c: len(c.events(pod.cgroup_id, "process_exit")) >= 3, timeout=10
        )
        events = probes.collector.events(pod.cgroup_id)
        probes.control.forget(pod.cgroup_id)
    by_kind: dict[str, list[pb.Event]] = {}
    for e in events:
        by_kind.setdefault(e.WhichOneof("payload") or "", []).append(e)

    execs = by_kind["exec"]
    top = next(e for e in execs if e.pid == proc.pid)
    assert top.exec.argv[:2] == [sys.executable, "-c"]
    shell = next(e for e in execs if e.exec.argv[:2] == ["sh", "-c"])
    true = next(e for e in execs if e.exec.path == "/bin/true")
    assert shell.ppid == proc.pid and true.ppid == shell.pid
    assert any(f.process_fork.child_pid == shell.pid for f in by_kind["process_fork"])

    opens = {(e.file_open.path, e.file_open.return_value < 0) for e in by_kind["file_open"]}
    assert ("/nonexistent/file", True) in opens
    assert ("/etc/hostname", False) in opens

    flows = [e.network_flow for e in by_kind["network_flow"]]
    connect = next(
        f for f in flows if f.direction == pb.FLOW_DIRECTION_CONNECT and f.remote_port != 53
    )
    accept = next(f for f in flows if f.direction == pb.FLOW_DIRECTION_ACCEPT)
    assert connect.remote_address == accept.local_address == "127.0.0.1"
    assert connect.remote_port == accept.local_port
    assert any(f.direction == pb.FLOW_DIRECTION_UDP_SEND and f.remote_port == 53 for f in flows)

    dns = [e.dns_query for e in by_kind["dns_query"]]
    assert {q.query_name for q in dns} == {"api.example.com"}
    answer = next(q for q in dns if q.rcode == 0)
    assert list(answer.answer_addresses) == ["203.0.113.7"]
    assert answer.server_address == "127.0.0.1" and answer.server_port == 53
    assert probes.control.drops() == {}


def test_capability_use(probes: Session, tmp_path: Path) -> None:
    target = tmp_path / "owned"
    target.touch()
    with local_pod("test", "caps") as pod:
        probes.control.track(pod.cgroup_id)
        assert pod.spawn(["/bin/chown", "1", str(target)], stdout=subprocess.DEVNULL).wait(30) == 0
        assert probes.collector.wait_for(
            lambda c: bool(c.events(pod.cgroup_id, "process_exit")), timeout=10
        )
        caps = {
            e.capability_use.capability_name
            for e in probes.collector.events(pod.cgroup_id, "capability_use")
        }
        probes.control.forget(pod.cgroup_id)
    assert "CAP_CHOWN" in caps
