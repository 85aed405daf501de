"""Events of one workload in its own cgroup: the exec tree, opens with failures marked, a loopback
connect/accept, capability checks and a DNS query with its answer; connects with their outcome
(refused, timed out, non-blocking); dual-stack sockets' IPv4 peers as IPv4; UDP sends with their
local port (a server's replies apart from its clients' sends); DNS answers past 512 bytes, cut
ones counted, and DNS over TCP."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import event_pb2 as pb
from parallax.type.v1 import platform_pb2

from agent.decode import FLOW, HEADER
from agent.localpod import local_pod
from agent.probes.counts import EPHEMERAL_MIN, kernel_key
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
DNS_EVENT = pb.EVENT_TYPE_DNS_QUERY


def _question(query: bytes) -> tuple[str, int, bytes]:
    """The name, type and wire form of a query's question."""
    end = query.index(b"\0", 12) + 5
    labels, pos = [], 12
    while query[pos]:
        labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
        pos += 1 + query[pos]
    return ".".join(labels), struct.unpack_from("!H", query, end - 4)[0], query[12:end]


def _rr(rtype: int, rdata: bytes) -> bytes:
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata


def _a(address: str) -> bytes:
    return _rr(1, socket.inet_aton(address))


def _answer(query: bytes) -> bytes:
    """api: one A record; many: 60 (994 bytes, an EDNS0 answer); cut: 5 A records, a 5000-byte
    TXT record and 5 more, longer than the probe copies; tcp: one A or AAAA record."""
    name, qtype, question = _question(query)
    if name == "many.example.com":
        records = [_a(f"10.0.{i // 256}.{i % 256}") for i in range(60)]
    elif name == "cut.example.com":
        txt = b"".join(bytes([250]) + b"x" * 250 for _ in range(20))
        records = [_a(f"10.1.0.{i}") for i in range(5)] + [_rr(16, txt)]
        records += [_a(f"10.2.0.{i}") for i in range(5)]
    elif qtype == 28:
        records = [_rr(28, socket.inet_pton(socket.AF_INET6, "2001:db8::9"))]
    else:
        records = [_a("203.0.113.9" if name == "tcp.example.com" else "203.0.113.7")]
    txid = struct.unpack_from("!H", query)[0]
    header = struct.pack("!HHHHHH", txid, 0x8180, 1, len(records), 0, 0)
    return header + question + b"".join(records)


def _serve_udp(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        sock.sendto(_answer(data), peer)


def _serve_tcp(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(10)
            stream = conn.makefile("rb")
            while prefix := stream.read(2):
                reply = _answer(stream.read(struct.unpack("!H", prefix)[0]))
                conn.sendall(struct.pack("!H", len(reply)) + reply)


@pytest.fixture
def resolver() -> Iterator[None]:
    """A DNS server on 127.0.0.1:53, UDP and TCP (outside the tracked cgroup), until the test
    ends."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        udp.bind(("127.0.0.1", 53))
        tcp.bind(("127.0.0.1", 53))
    except OSError as exc:
        udp.close()
        tcp.close()
        pytest.skip(f"127.0.0.1:53 is busy ({exc})")
    tcp.listen()
    stop = threading.Event()
    threads = []
    for serve, sock in ((_serve_udp, udp), (_serve_tcp, tcp)):
        sock.settimeout(0.1)  # how often the server looks at `stop`
        threads.append(threading.Thread(target=serve, args=(sock, stop), daemon=True))
        threads[-1].start()
    yield
    stop.set()
    for thread in threads:
        thread.join(5)
    udp.close()
    tcp.close()


def _run(probes: Session, name: str, code: str, *args: object) -> list[pb.Event]:
    """Run `code` in a fresh tracked pod to its exit; its events once its exit is seen."""
    with local_pod("test", name) as pod:
        probes.control.track(pod.cgroup_id)
        proc = pod.spawn([sys.executable, "-c", code, *map(str, args)])
        assert proc.wait(30) == 0
        assert probes.collector.wait_for(
            lambda c: any(e.pid == proc.pid for e in c.events(pod.cgroup_id, "process_exit")),
            timeout=10,
        )
        events = probes.collector.events(pod.cgroup_id)
        probes.control.forget(pod.cgroup_id)
    return events


def _flows(events: list[pb.Event], keep: Callable[[pb.NetworkFlow], bool]) -> list[pb.NetworkFlow]:
    return [e.network_flow for e in events if e.HasField("network_flow") and keep(e.network_flow)]


def test_workload_events(probes: Session, resolver: None) -> None:
    drops = probes.control.drops()
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
    assert probes.control.drops() == drops


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


CONNECTS = r"""
import errno, select, socket, sys
ok, nonblocking, refused, full = (("127.0.0.1", int(port)) for port in sys.argv[1:])
socket.create_connection(ok).close()
n = socket.socket()
n.setblocking(False)
assert n.connect_ex(nonblocking) == errno.EINPROGRESS
assert select.select([], [n], [], 10)[1]
assert n.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
assert socket.socket().connect_ex(refused) == errno.ECONNREFUSED
t = socket.socket()  # its SYNs are dropped (full accept queue): gives up after ~1 s
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 200)
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
assert t.connect_ex(full) == errno.ETIMEDOUT
"""


def test_connects_report_their_outcome(probes: Session) -> None:
    """One event per connect, once its outcome is known: 0 when established (blocking or not),
    the negative errno when refused or timed out; with the connecting task."""
    with contextlib.ExitStack() as stack:
        ok, nonblocking, refused, full = (stack.enter_context(socket.socket()) for _ in range(4))
        for sock in (ok, nonblocking, refused, full):
            sock.bind(("127.0.0.1", 0))  # `refused` stays bound without listening: RST
        ok.listen()
        nonblocking.listen()
        full.listen(0)
        stack.enter_context(socket.create_connection(full.getsockname()))  # fills its queue
        ports = [sock.getsockname()[1] for sock in (ok, nonblocking, refused, full)]
        events = _run(probes, "connects", CONNECTS, *ports)
    connects = [
        e
        for e in events
        if e.HasField("network_flow") and e.network_flow.direction == pb.FLOW_DIRECTION_CONNECT
    ]
    results = {
        p: [e.network_flow.return_value for e in connects if e.network_flow.remote_port == p]
        for p in ports
    }
    assert results == {ports[0]: [0], ports[1]: [0], ports[2]: [-111], ports[3]: [-110]}
    assert all(e.pid and e.comm for e in connects)


DUAL_STACK = r"""
import socket
ds = socket.socket(socket.AF_INET6)
ds.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ds.bind(("::", 0))
ds.listen()
port = ds.getsockname()[1]
c4 = socket.create_connection(("127.0.0.1", port)); a4, _ = ds.accept()
c6 = socket.socket(socket.AF_INET6); c6.connect(("::ffff:127.0.0.1", port)); a6, _ = ds.accept()
"""


def test_dual_stack_peers_are_ipv4(probes: Session) -> None:
    """A dual-stack (AF_INET6, not V6ONLY) server accepting IPv4 clients and an AF_INET6 client
    connecting to 127.0.0.1 see IPv4-mapped addresses; the events carry 127.0.0.1, INET."""
    events = _run(probes, "dual-stack", DUAL_STACK)
    accepts = _flows(events, lambda f: f.direction == pb.FLOW_DIRECTION_ACCEPT)
    connects = _flows(
        events, lambda f: f.direction == pb.FLOW_DIRECTION_CONNECT and f.remote_port != 53
    )
    assert accepts and len(connects) == 2  # connect4 and connect6: two kernel keys
    port = accepts[0].local_port
    for flow in accepts:
        assert (flow.remote_address, flow.local_address) == ("127.0.0.1", "127.0.0.1")
        assert flow.family == pb.ADDRESS_FAMILY_INET
    for flow in connects:
        assert (flow.remote_address, flow.remote_port) == ("127.0.0.1", port)
        assert flow.family == pb.ADDRESS_FAMILY_INET and flow.return_value == 0


UDP_SERVER = r"""
import socket
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(5353, 5453):  # a service port, below the ephemeral range
    try:
        srv.bind(("127.0.0.1", port))
        break
    except OSError:
        continue
clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
clients[1].bind(("127.0.0.1", 0))  # the others are unbound until their first send
ports = []
for c in clients:
    c.settimeout(10)
    c.sendto(b"ping", srv.getsockname())
    _, peer = srv.recvfrom(64)
    srv.sendto(b"pong", peer)
    assert c.recv(64) == b"pong"
    ports.append(c.getsockname()[1])
print(port, *ports)
"""


def test_udp_sends_carry_their_local_port(probes: Session) -> None:
    """A UDP server on a service port replying to clients on ephemeral ports: its replies carry
    the service port as local port and the client's as remote; a client's send carries its own
    ephemeral port, even from a socket unbound before the send (the kernel binds it before the
    sendmsg hook runs). Replies and client sends are keyed apart, each kept to one event: the
    replies without the clients' ports, the sends without their own."""
    with local_pod("test", "udp-server") as pod:
        probes.control.track(pod.cgroup_id)
        proc = pod.spawn([sys.executable, "-c", UDP_SERVER], stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert probes.collector.wait_for(
            lambda c: any(e.pid == proc.pid for e in c.events(pod.cgroup_id, "process_exit")),
            timeout=10,
        )
        events = probes.collector.events(pod.cgroup_id, "network_flow")
        counts = probes.control.dedup_counts("flows_seen")
        probes.control.forget(pod.cgroup_id)
    server, *clients = map(int, out.split())
    assert server < EPHEMERAL_MIN <= min(clients)
    sends = _flows(events, lambda f: f.direction == pb.FLOW_DIRECTION_UDP_SEND)
    replies = [f for f in sends if f.local_port == server]
    assert [(f.remote_address, f.remote_port, f.local_address) for f in replies] == [
        ("127.0.0.1", clients[0], "127.0.0.1")
    ]
    asks = sorted((f.local_port, f.local_address) for f in sends if f.remote_port == server)
    # unbound clients 0 and 2 share a key (reported once, with client 0's port); bound client 1
    # has its own (its address is known)
    assert asks == sorted([(clients[0], ""), (clients[1], "127.0.0.1")])
    assert len(sends) == 3
    by_port = {f.local_port: f for f in sends}
    hits = {port: counts.get(_flow_key(pod.cgroup_id, by_port[port])) for port in by_port}
    assert hits == {server: 3, clients[0]: 2, clients[1]: 1}


def _flow_key(cgroup_id: int, f: pb.NetworkFlow) -> bytes:
    """The flows_seen key agent.probes.counts derives from the record of an IPv4 flow `f`."""
    raw = HEADER.pack(pb.EVENT_TYPE_NETWORK_FLOW, 0, 0, 0, 0, cgroup_id, b"") + FLOW.pack(
        cgroup_id,
        f.direction,
        2,
        17 if f.protocol == platform_pb2.PROTOCOL_UDP else 6,
        f.remote_port,
        f.local_port,
        socket.inet_aton(f.remote_address).ljust(16, b"\0"),
        socket.inet_aton(f.local_address or "0.0.0.0").ljust(16, b"\0"),
        f.return_value,
    )
    found = kernel_key(raw)
    assert found is not None
    return found[1]


UDP_DNS = r"""
import socket, struct
def ask(name, txid):
    q = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 1)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1) + b"\0" + struct.pack("!HHIH", 41, 8192, 0, 0)  # EDNS0 OPT
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(10)
    u.sendto(q, ("127.0.0.1", 53))
    return len(u.recv(16384))
assert ask("many.example.com", 1) == 994
assert ask("cut.example.com", 2) > 4096
"""


def _answers(events: list[pb.Event]) -> dict[tuple[str, str], list[str]]:
    """Answer addresses by (name, type); queries (rcode -1) left out."""
    return {
        (q.query_name, q.query_type): list(q.answer_addresses)
        for q in (e.dns_query for e in events if e.HasField("dns_query"))
        if q.rcode == 0
    }


def test_dns_answers_past_512_bytes(probes: Session, resolver: None) -> None:
    """An EDNS0 answer of 994 bytes arrives whole (the contract keeps 32 addresses); one longer
    than the probe copies keeps the addresses before the cut and counts one DNS drop."""
    before = probes.control.drops()
    events = _run(probes, "dns-big", UDP_DNS)
    answers = _answers(events)
    assert answers[("many.example.com", "A")] == [f"10.0.0.{i}" for i in range(32)]
    assert answers[("cut.example.com", "A")] == [f"10.1.0.{i}" for i in range(5)]
    after = probes.control.drops()
    assert after.get(DNS_EVENT, 0) - before.get(DNS_EVENT, 0) == 1
    assert {k: n for k, n in after.items() if k != DNS_EVENT} == {
        k: n for k, n in before.items() if k != DNS_EVENT
    }


TCP_DNS = r"""
import socket, struct
def query(txid, qtype):
    q = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    q += b"\x03tcp\x07example\x03com\x00" + struct.pack("!HH", qtype, 1)
    return struct.pack("!H", len(q)) + q
s = socket.create_connection(("127.0.0.1", 53), timeout=10)
s.sendall(query(0x0A0A, 1) + query(0x0B0B, 28))  # one segment, two messages, as glibc sends them
replies = s.makefile("rb")
for _ in range(2):
    replies.read(struct.unpack("!H", replies.read(2))[0])
"""


def test_dns_over_tcp(probes: Session, resolver: None) -> None:
    """Both length-prefixed queries of one segment and both answers are seen, and nothing else
    on the connection (handshake, acknowledgements) is taken for DNS."""
    events = _run(probes, "dns-tcp", TCP_DNS)
    dns = [e.dns_query for e in events if e.HasField("dns_query")]
    assert {(q.query_name, q.server_address, q.server_port) for q in dns} == {
        ("tcp.example.com", "127.0.0.1", 53)
    }
    assert sorted(q.query_type for q in dns if q.rcode == -1) == ["A", "AAAA"]
    assert _answers(events) == {
        ("tcp.example.com", "A"): ["203.0.113.9"],
        ("tcp.example.com", "AAAA"): ["2001:db8::9"],
    }
