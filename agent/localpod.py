"""Local pods without Kubernetes (`parallax run`, `parallax record`, tests): a command in its own
cgroup v2 under <v2 mount>/parallax/<namespace>/<pod>, optionally in its own network namespace
with a veth pair from 198.18.0.0/15, and a registry file /run/parallax/pods/<cgroup id>.json
that agent.attribution reads to attribute the pod like a Kubernetes one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY = Path("/run/parallax/pods")
PREFIX = "parallax"
_CLONE_NEWNET = 0x40000000
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def cgroup2_mount() -> Path:
    """Where cgroup v2 is mounted: /sys/fs/cgroup when pure v2, else /sys/fs/cgroup/unified."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mountpoint, fstype, *_ = line.split()
        if fstype == "cgroup2":
            return Path(mountpoint)
    raise RuntimeError("cgroup v2 is not mounted: mount -t cgroup2 none /sys/fs/cgroup/unified")


def check_identity(image_digest: str, kind: str, workload: str) -> None:
    """Raise ValueError unless `image_digest` is empty or sha256:<64 hex>, and `kind` and
    `workload` are both given or both empty."""
    if image_digest and not _DIGEST.fullmatch(image_digest):
        raise ValueError(
            f"image digest {image_digest!r} is not sha256: followed by 64 lowercase hex digits: "
            "pass it as the registry reports it (sha256:<64 hex>)"
        )
    if bool(kind) != bool(workload):
        raise ValueError(
            "an owner workload needs both its kind and its name: pass --kind and --workload "
            "together (or neither, for a pod that is its own workload)"
        )


@dataclass
class LocalPod:
    """A pod made of one cgroup (and maybe one netns); the command is started with `spawn`.
    `image` and `image_digest` are what the pod status would report (a new digest starts a new
    profile in the runtime); `kind` and `workload` name its owner, given together (default: the
    pod itself, kind Pod)."""

    namespace: str
    pod: str
    labels: dict[str, str] = field(default_factory=dict)
    container: str = "main"
    netns: bool = False
    image: str = ""
    image_digest: str = ""
    kind: str = ""
    workload: str = ""
    cgroup: Path = field(init=False)
    cgroup_id: int = field(init=False, default=0)
    netns_name: str = field(init=False, default="")
    address: str = field(init=False, default="")

    def __post_init__(self) -> None:
        check_identity(self.image_digest, self.kind, self.workload)
        self.cgroup = cgroup2_mount() / PREFIX / self.namespace / self.pod

    @property
    def cgroup_path(self) -> str:
        """The cgroup's path relative to the v2 mount, as cgroup:cgroup_mkdir reports it."""
        return "/" + str(self.cgroup.relative_to(cgroup2_mount()))

    def create(self) -> None:
        """Make the cgroup (and netns), then write the registry file."""
        prune_registry()
        self.cgroup.mkdir(parents=True, exist_ok=False)
        self.cgroup_id = self.cgroup.stat().st_ino
        if self.netns:
            self._make_netns()
        REGISTRY.mkdir(parents=True, exist_ok=True)
        entry = {
            "namespace": self.namespace,
            "pod": self.pod,
            "labels": self.labels,
            "container": self.container,
            "cgroup_path": self.cgroup_path,
            "netns": self.netns_name,
            "address": self.address,
            "image": self.image,
            "image_digest": self.image_digest,
            "kind": self.kind,
            "workload": self.workload,
        }
        (REGISTRY / f"{self.cgroup_id}.json").write_text(json.dumps(entry, indent=2))

    def _make_netns(self) -> None:
        index = self.cgroup_id % 16384  # a /30 per pod inside 198.18.0.0/15
        base = (198 << 24) | (18 << 16) | (index * 4)
        host, peer = _ip(base + 1), _ip(base + 2)
        self.netns_name, self.address = f"px-{self.cgroup_id}", peer
        outside, inside = f"pxh{index}", f"pxp{index}"
        for cmd in (
            ["ip", "netns", "add", self.netns_name],
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
            ["ip", "link", "set", inside, "netns", self.netns_name],
            ["ip", "addr", "add", f"{host}/30", "dev", outside],
            ["ip", "link", "set", outside, "up"],
            ["ip", "-n", self.netns_name, "addr", "add", f"{peer}/30", "dev", inside],
            ["ip", "-n", self.netns_name, "link", "set", inside, "up"],
            ["ip", "-n", self.netns_name, "link", "set", "lo", "up"],
            ["ip", "-n", self.netns_name, "route", "add", "default", "via", host],
        ):
            subprocess.run(cmd, check=True, capture_output=True)

    def spawn(self, argv: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        """Start `argv` inside the cgroup (and netns): the child joins before its exec, so the
        exec and everything after are the pod's."""
        procs = os.open(self.cgroup / "cgroup.procs", os.O_WRONLY)
        netns_fd = os.open(f"/run/netns/{self.netns_name}", os.O_RDONLY) if self.netns_name else -1

        def join() -> None:
            os.write(procs, b"0")
            if netns_fd >= 0 and ctypes.CDLL(None, use_errno=True).setns(netns_fd, _CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "setns")

        try:
            return subprocess.Popen(list(argv), preexec_fn=join, **popen)  # type: ignore[call-overload,no-any-return]  # noqa: PLW1509
        finally:
            os.close(procs)
            if netns_fd >= 0:
                os.close(netns_fd)

    def destroy(self) -> None:
        """Kill what is left in the cgroup, remove it, the netns and the registry file."""
        with contextlib.suppress(OSError):
            (self.cgroup / "cgroup.kill").write_text("1")
        for _ in range(1000):
            try:
                self.cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                os.sched_yield()  # cgroup.kill is asynchronous; the last task is being reaped
        if self.netns_name:
            subprocess.run(
                ["ip", "netns", "delete", self.netns_name], capture_output=True, check=False
            )
        _mark_ended(REGISTRY / f"{self.cgroup_id}.json")
        for parent in (self.cgroup.parent, self.cgroup.parent.parent):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only succeeds once the last pod of the namespace is gone


# An ended pod's registry entry is kept this long, so the agent can still attribute the events
# it drains after the pod is gone (a short-lived pod can end before the agent reads its file).
REGISTRY_RETENTION = 600.0


def _mark_ended(entry: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(entry.read_text())
        data["ended"] = time.time()
        entry.write_text(json.dumps(data, indent=2))


def prune_registry(now: float | None = None) -> None:
    """Remove registry entries of pods that ended more than REGISTRY_RETENTION seconds ago."""
    cutoff = (now or time.time()) - REGISTRY_RETENTION
    for entry in REGISTRY.glob("*.json") if REGISTRY.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            ended = json.loads(entry.read_text()).get("ended")
            if isinstance(ended, (int, float)) and ended < cutoff:
                entry.unlink()


@contextlib.contextmanager
def local_pod(namespace: str, pod: str, **kw: object) -> Iterator[LocalPod]:
    """A created LocalPod, destroyed on exit."""
    p = LocalPod(namespace, pod, **kw)  # type: ignore[arg-type]
    p.create()
    try:
        yield p
    finally:
        p.destroy()


def _ip(value: int) -> str:
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))
