"""Cgroup v2 paths to pods and containers: parses the Kubernetes layouts of the systemd and
cgroupfs drivers under containerd, CRI-O and Docker, and Parallax's local pods; and walks the
hierarchy so cgroups that existed before the agent started are known. Used by the attributor."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

LOCAL_ROOT = "parallax"

# A pod's cgroup: `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>.slice` (systemd, which spells
# the UID's dashes as underscores); kind nests it as `kubelet-kubepods-...`. Static pods' UIDs
# are the 32-hex config hash.
_POD = re.compile(r"(?:[a-z_.-]*kubepods[a-z_.-]*-)?pod(?P<uid>[0-9a-f_-]{32,36})(?:\.slice)?")
# A container's cgroup right below its pod: a bare 64-hex id (cgroupfs containerd and Docker),
# `crio-<id>` (cgroupfs CRI-O) or `<prefix>-<id>.scope` (systemd).
_CONTAINER = re.compile(
    r"(?:(?P<prefix>cri-containerd|crio|docker)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?"
)
_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker", None: ""}


@dataclass(frozen=True)
class KubeRef:
    """A Kubernetes pod cgroup; `container_id` is empty for the pod's own cgroup."""

    pod_uid: str
    container_id: str
    runtime: str


@dataclass(frozen=True)
class LocalRef:
    """A local pod made by `parallax run`, at `/parallax/<namespace>/<pod>`."""

    namespace: str
    pod: str


CgroupRef = KubeRef | LocalRef


def _pod_uid(raw: str) -> str | None:
    text = raw.replace("_", "-")
    if len(text) == 32 and "-" not in text:
        return text
    try:
        return str(uuid.UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


def parse(path: str) -> CgroupRef | None:
    """Return what the cgroup at `path` (relative to the v2 root, as `cgroup_mkdir` reports it)
    belongs to, or None for host cgroups. Sub-cgroups a container makes inside its own cgroup
    belong to that container; only a segment directly below a pod's counts as a container."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 3 and parts[0] == LOCAL_ROOT:
        return LocalRef(parts[1], parts[2])
    for at, part in enumerate(parts):
        pod = _POD.fullmatch(part)
        if pod is None or not any("kubepods" in p for p in parts[: at + 1]):
            continue
        uid = _pod_uid(pod["uid"])
        if uid is None:
            continue
        if at + 1 == len(parts):
            return KubeRef(uid, "", "")
        container = _CONTAINER.fullmatch(parts[at + 1])
        if container is None:  # CRI-O's conmon scope and other helpers are not containers
            return KubeRef(uid, "", "")
        return KubeRef(uid, container["id"], _RUNTIMES[container["prefix"]])
    return None


def walk(root: str) -> Iterator[tuple[int, str]]:
    """Yield (cgroup id, path) for every cgroup under the v2 mount `root`, parents first; the
    id is the directory's inode, as `bpf_get_current_cgroup_id()` reports it. Cgroups removed
    during the walk are skipped."""
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                children = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            inode = os.stat(directory, follow_symlinks=False).st_ino
        except FileNotFoundError:
            continue
        relative = os.path.relpath(directory, root)
        yield inode, "/" if relative == "." else "/" + relative
        pending.extend(sorted(children, reverse=True))
