"""The demo's node without Kubernetes: the sample app's services as local pods (agent.localpod),
each with its own cgroup, network namespace and mount view, wired through a "node" network
namespace the demo owns, so pod-to-pod traffic, the load and the attack never touch the host's
network. Also a bare namespace for re-running the app under seccomp unseen by the agent.
Used by cli/demo.py; everything it makes, `close` removes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agent.localpod import REGISTRY, LocalPod
from cli import demo_enter

_ENTER = Path(demo_enter.__file__)
# What the attack steals: shaped like a ServiceAccount JWT, signed by nobody.


@dataclass(frozen=True)
class PodSpec:
    """One pod of the sample app as its manifest describes it."""

    name: str
    image: str
    labels: Mapping[str, str]
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    token: bool = False  # the ServiceAccount token is mounted
    host_paths: Mapping[str, Path] = field(default_factory=dict)  # mountPath -> node directory


def _in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run in network namespace `netns` by nsenter: no Python runs between fork and exec
    in this process, whose gRPC threads make that unsafe (a child once hung there)."""
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    return [nsenter, f"--net=/run/netns/{netns}", "--", *argv]


def gateway(address: str) -> str:
    """The node end of a pod's /30: the address just below the pod's."""
    head, _, last = address.rpartition(".")
    return f"{head}.{int(last) - 1}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Node:
    """The demo's node: a network namespace routing between the pods' veth pairs."""

    name: str
    # The demo's agent reads pods from here only: other local pods on the machine (another
    # demo's "shop", say) stay unattributed instead of joining this demo's workloads.
    registry: Path
    pods: dict[str, LocalPod] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    bare: list[str] = field(default_factory=list)

    def create(self) -> None:
        """Make the node namespace with forwarding on."""
        _ip("netns", "add", self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")
        subprocess.run(
            ["ip", "netns", "exec", self.name, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
            timeout=10,
        )

    def start_pod(self, namespace: str, spec: PodSpec, log: IO[bytes]) -> LocalPod:
        """Create the pod (cgroup, netns, registry entry naming its Deployment) and start it."""
        # A pod name per run, as a ReplicaSet would make; two demos at once on one machine would
        # still share the agent's view of namespace "shop".
        name = f"{spec.name}-{os.getpid()}"
        pod = LocalPod(namespace, name, labels=dict(spec.labels), netns=True)
        pod.container = spec.name
        self.pods[spec.name] = pod
        pod.create()
        self._register(pod, spec)
        self._adopt_veth(pod)
        self.processes.append(self.spawn(pod, spec, log))
        return pod

    def _register(self, pod: LocalPod, spec: PodSpec) -> None:
        # The registry entry makes the agent attribute the pod to its Deployment, as the kubelet
        # and API server would; no process runs in the cgroup yet, so nothing was read before.
        path = REGISTRY / f"{pod.cgroup_id}.json"
        entry = json.loads(path.read_text())
        entry.update(kind="Deployment", workload=spec.name, image=spec.image)
        self.registry.mkdir(parents=True, exist_ok=True)
        for target in (path, self.registry / path.name):
            temporary = target.with_suffix(".tmp")
            temporary.write_text(json.dumps(entry, indent=2))
            temporary.replace(target)

    def _adopt_veth(self, pod: LocalPod) -> None:
        # LocalPod puts the host end of the veth pair (pxh<index>, address .1 of the pod's /30)
        # in the host namespace; the node namespace takes it, so routing between pods is ours.
        index = pod.cgroup_id % 16384
        outside = f"pxh{index}"
        _ip("link", "set", outside, "netns", self.name)
        _ip("-n", self.name, "addr", "add", f"{gateway(pod.address)}/30", "dev", outside)
        _ip("-n", self.name, "link", "set", outside, "up")

    def spawn(
        self, pod: LocalPod, spec: PodSpec, log: IO[bytes], argv: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start `argv` (default the pod's command) in the pod's mount view, netns and cgroup;
        the cgroup is joined last, so the exec is the pod's first event."""
        view = json.dumps(
            {"token": spec.token, "host_paths": {t: str(p) for t, p in spec.host_paths.items()}}
        )
        procs = str(pod.cgroup / "cgroup.procs")
        command = list(argv or spec.argv)
        return subprocess.Popen(
            [sys.executable, "-I", str(_ENTER), view, pod.netns_name, procs, "--", *command],
            env={"PATH": "/usr/bin:/bin", **spec.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def run(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float, netns: str = ""
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command in the node namespace (or `netns`), outside every pod cgroup."""
        return subprocess.run(
            _in_netns(netns or self.name, argv),
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def bare_namespace(self, name: str) -> str:
        """A network namespace with only loopback, outside every pod: the seccomp re-run."""
        _ip("netns", "add", name)
        self.bare.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def start_in(
        self, netns: str, argv: Sequence[str], env: Mapping[str, str], log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start a long-running command in `netns`, outside every pod cgroup."""
        process = subprocess.Popen(
            _in_netns(netns, argv),
            env={"PATH": "/usr/bin:/bin", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        """Stop every process, remove the pods, the namespaces and the node."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        for pod in self.pods.values():
            with contextlib.suppress(OSError):
                pod.destroy()
        self.pods.clear()
        for name in [*self.bare, self.name]:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        self.bare.clear()
