"""Test support: domain events and proto batches of a small shop workload, so that each test
states only what matters to it."""

from __future__ import annotations

import itertools
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import blind_spot_pb2, event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb
from parallax.type.v1 import workload_pb2

from services.runtime import domain, wire

T0 = 1_790_000_000.0
CART = domain.Workload("shop", "Deployment", "cart")
DIGEST = "sha256:" + "a" * 64


def origin(pod: str = "cart-1", digest: str = DIGEST, node: str = "n1") -> domain.Origin:
    return domain.Origin(
        CART, pod, "cart", f"uid-{pod}", f"cid-{pod}", "shop/cart:1", digest, node, 1000
    )


def event(
    payload: domain.Payload, at: float = T0, pid: int = 100, ppid: int = 1, **extra: Any
) -> domain.Event:
    return domain.Event(
        at,
        extra.get("origin") or origin(),
        pid,
        ppid,
        extra.get("uid", 0),
        extra.get("comm", "cart"),
        payload,
    )


def exec_(
    path: str, *argv: str, stdin_socket: bool = False, stdout_socket: bool = False
) -> domain.Exec:
    return domain.Exec(path, (path, *argv), 0, 0, stdin_socket, stdout_socket, False)


def opened(path: str, flags: int = 0, return_value: int = 3) -> domain.FileOpen:
    return domain.FileOpen(path, flags, return_value, 1)


def flow(address: str, port: int, direction: int = 1, protocol: int = 1) -> domain.Flow:
    return domain.Flow(direction, protocol, address, port, 40000, 0, 1)


# --- protos --------------------------------------------------------------------------------


def stamp(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))


def attribution(
    pod: str = "cart-1", digest: str = DIGEST, container: str = "cart"
) -> event_pb2.Attribution:
    return event_pb2.Attribution(
        workload=workload_pb2.WorkloadRef(
            namespace="shop", kind="Deployment", name="cart", pod=pod, container=container
        ),
        pod_uid=f"uid-{pod}",
        container_id=f"cid-{pod}",
        image="shop/cart:1",
        image_digest=digest,
    )


def wire_event(
    at: float = T0,
    pid: int = 100,
    ppid: int = 1,
    pod: str = "cart-1",
    digest: str = DIGEST,
    **payload: Any,
) -> event_pb2.Event:
    return event_pb2.Event(
        event_time=stamp(at),
        cgroup_id=1000,
        attribution=attribution(pod, digest),
        pid=pid,
        ppid=ppid,
        comm="cart",
        **payload,
    )


def wire_exec(path: str, *argv: str, **extra: Any) -> event_pb2.Event:
    stdio = {k: extra.pop(k) for k in ("stdin_kind", "stdout_kind") if k in extra}
    return wire_event(exec=event_pb2.Exec(path=path, argv=[path, *argv], **stdio), **extra)


def wire_open(path: str, flags: int = 0, return_value: int = 3, **extra: Any) -> event_pb2.Event:
    payload = event_pb2.FileOpen(path=path, flags=flags, return_value=return_value, count=1)
    return wire_event(file_open=payload, **extra)


def wire_flow(address: str, port: int, **extra: Any) -> event_pb2.Event:
    payload = event_pb2.NetworkFlow(
        direction=event_pb2.FLOW_DIRECTION_CONNECT,
        protocol=1,
        family=1,
        remote_address=address,
        remote_port=port,
        count=1,
    )
    return wire_event(network_flow=payload, **extra)


def wire_syscalls(numbers: list[int], start_observed: bool = True, **extra: Any) -> event_pb2.Event:
    payload = event_pb2.SyscallSet(
        arch=1,
        syscall_numbers=numbers,
        syscall_names=[f"sys{n}" for n in numbers],
        start_observed=start_observed,
    )
    return wire_event(syscall_set=payload, **extra)


def batch(
    sequence: int, events: list[event_pb2.Event], session: str = "s1", **extra: Any
) -> pb.ReportEventsRequest:
    return pb.ReportEventsRequest(
        agent_id="agent-n1",
        node_name="n1",
        boot_id="boot-1",
        session_id=session,
        sequence=sequence,
        agent_version="0.1",
        kernel_release="6.1",
        arch=1,
        events=events,
        **extra,
    )


_BEATS = itertools.count(1_000_000)


def watch(core: Any, seconds: float, node: str = "n1") -> list[Any]:
    """Let `seconds` pass on `core`'s clock (an attribute `now`) with `node`'s agent reporting
    every minute, as idle agents do (heartbeats: empty batches), ticking after each; return
    the profiles the ticks moved. Learning windows count only such watched time."""
    moved: list[Any] = []
    end = core.clock.now + seconds
    while core.clock.now < end:
        core.clock.now = min(end, core.clock.now + 60)
        beat = batch(next(_BEATS), [])
        beat.node_name = node
        core.ingest(wire.batch(beat, core.clock.now))
        moved += core.tick()
    return moved


def drops(total: int) -> list[blind_spot_pb2.DropCounter]:
    return [blind_spot_pb2.DropCounter(event_type=6, source=1, dropped_total=total)]
