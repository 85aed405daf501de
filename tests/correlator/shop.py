"""Test support for the multi-process correlator test: the shop manifests (a privileged cart
Deployment with host mounts, a cluster-admin ServiceAccount and a NodePort Service), and agent
batches of what its container did, with the syscalls /bin/true really makes (strace)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as rt
from parallax.type.v1 import workload_pb2

from services.policygen import syscalls

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart}}
    spec:
      serviceAccountName: cart
      hostNetwork: true
      containers:
        - name: cart
          image: ghcr.io/acme/cart:1.4
          securityContext:
            privileged: true
            capabilities: {add: [NET_ADMIN]}
          volumeMounts:
            - {name: etc, mountPath: /host}
            - {name: creds, mountPath: /etc/creds}
            - {name: docker, mountPath: /var/run/docker.sock}
      volumes:
        - {name: etc, hostPath: {path: /etc}}
        - {name: creds, secret: {secretName: cart-creds}}
        - {name: docker, hostPath: {path: /var/run/docker.sock}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: cart, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: cart-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: cart, namespace: shop}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  type: NodePort
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
"""
CART = workload_pb2.WorkloadRef(namespace="shop", kind="Deployment", name="cart")
DIGEST = "sha256:" + "c" * 64
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_TRACE_LINE = re.compile(r"^\d+\s+\[\s*(\d+)\]")


def true_syscalls(log: Path) -> list[int]:
    """The syscall numbers /bin/true makes, recorded as the agent's recorder would see them."""
    subprocess.run(
        ["strace", "-f", "-qq", "-n", "-o", str(log), "/bin/true"],
        check=True,
        timeout=60,
        capture_output=True,
    )
    lines = log.read_text().splitlines()
    return sorted({int(m[1]) for line in lines if (m := _TRACE_LINE.match(line))})


def _event(pid: int, uid: int = 1000, **payload: object) -> event_pb2.Event:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    ref = workload_pb2.WorkloadRef(
        namespace="shop", kind="Deployment", name="cart", pod="cart-1", container="cart"
    )
    attribution = event_pb2.Attribution(
        workload=ref,
        pod_uid="uid-cart-1",
        container_id="cid-1",
        image="ghcr.io/acme/cart:1.4",
        image_digest=DIGEST,
    )
    return event_pb2.Event(
        event_time=stamp,
        cgroup_id=4242,
        attribution=attribution,
        pid=pid,
        ppid=1,
        uid=uid,
        comm="true",
        **payload,
    )  # type: ignore[arg-type]


def _syscall_set(numbers: list[int]) -> event_pb2.Event:
    arch = syscalls.native_arch()
    names = [syscalls.name_of(arch, n) or f"sys{n}" for n in numbers]
    return _event(
        100,
        syscall_set=event_pb2.SyscallSet(
            arch=1, syscall_numbers=numbers, syscall_names=names, start_observed=True
        ),
    )


def _open(path: str) -> event_pb2.Event:
    return _event(100, file_open=event_pb2.FileOpen(path=path, flags=0, return_value=3, count=1))


def learning_events(numbers: list[int]) -> list[event_pb2.Event]:
    """The container's start and behaviour while learning."""
    return [
        _syscall_set(numbers),
        _event(100, exec=event_pb2.Exec(path="/bin/true", argv=["/bin/true"], euid=1000)),
        _event(
            100,
            capability_use=event_pb2.CapabilityUse(
                capability_name="CAP_SYS_ADMIN", capability_number=21, allowed=True, count=2
            ),
        ),
        _open("/host/shadow"),
        _open(TOKEN),
        _open("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
        _event(
            100,
            network_flow=event_pb2.NetworkFlow(
                direction=event_pb2.FLOW_DIRECTION_CONNECT,
                protocol=1,
                family=1,
                remote_address="10.0.0.1",
                remote_port=10250,
                count=1,
            ),
        ),
    ]


def after_complete_events() -> list[event_pb2.Event]:
    """New behaviour once the profile is COMPLETE: ptrace, and a shell."""
    ptrace = syscalls.number_of(syscalls.native_arch(), "ptrace")
    return [
        _syscall_set([ptrace]),
        _event(200, exec=event_pb2.Exec(path="/bin/sh", argv=["/bin/sh", "-i"], euid=1000)),
    ]


def batch(node: str, sequence: int, events: list[event_pb2.Event]) -> rt.ReportEventsRequest:
    """One agent batch from `node`."""
    return rt.ReportEventsRequest(
        agent_id=f"agent-{node}",
        node_name=node,
        boot_id="boot-1",
        session_id="s1",
        sequence=sequence,
        agent_version="0.1",
        kernel_release="6.1",
        arch=1,
        events=events,
    )
