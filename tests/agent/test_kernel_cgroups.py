"""Which new cgroups the kernel tracks: a pod's container created after the agent started is
recorded from its first exec whatever the kubelet layout (kind, nested in Docker, systemd and
cgroupfs drivers), its events reach attribution through a Kubernetes API server, only container
cgroups learn, a new cgroup outside kubelet's and the local pods' hierarchies stays untracked,
and one the kernel cannot keep is counted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.attributed import Item
from agent.attribution import kube
from agent.attribution.attributor import Attributor
from agent.attribution.pods import PodIndex
from agent.compact import to_event
from agent.decode import CgroupChange
from agent.localpod import cgroup2_mount
from agent.probes.control import Control
from agent.probes.loader import Loader
from agent.probes.source import KernelSource
from tests.agent.conftest import probes_with_a_full_map, started_source
from tests.agent.test_attribution import pod
from tests.kubeapi import KubeAPIServer

pytestmark = pytest.mark.ebpf
TIMEOUT = 20.0

# Container cgroup paths by kubelet layout, with {uid} the pod UID (dashes), {sd} the same as
# systemd spells it (underscores), {cid} the container ID and {outer} the node container's ID.
LAYOUTS = {
    "kind": (
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        "kubelet-kubepods-besteffort-pod{sd}.slice/cri-containerd-{cid}.scope"
    ),
    "nested-in-docker": "/system.slice/docker-{outer}.scope/kubepods/burstable/pod{uid}/{cid}",
    # kind's node is a Docker container: a path longer than the kernel's 256-byte copy
    "kind-in-docker": (
        "/system.slice/docker-{outer}.scope/kubelet.slice/kubelet-kubepods.slice/"
        "kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{sd}.slice/"
        "cri-containerd-{cid}.scope"
    ),
    "systemd": (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{sd}.slice/"
        "cri-containerd-{cid}.scope"
    ),
    "cgroupfs": "/kubepods/besteffort/pod{uid}/crio-{cid}",
}


@pytest.fixture(scope="module")
def source() -> Iterator[KernelSource]:
    """The agent's KernelSource, started before any of the tests' cgroups exist."""
    yield from started_source()


@contextlib.contextmanager
def cgroup_chain(path: str) -> Iterator[Path]:
    """The cgroup at `path` (relative to the v2 mount) with its missing parents, made now and
    removed (those made here only, deepest first) at the end."""
    root = cgroup2_mount()
    made: list[Path] = []
    current = root
    try:
        for part in path.strip("/").split("/"):
            current = current / part
            if not current.exists():
                current.mkdir()
                made.append(current)
        yield current
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                (directory / "cgroup.kill").write_text("1")
            for _ in range(1000):  # cgroup.kill is asynchronous: the last task is being reaped
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    os.sched_yield()


def run_in(cgroup: Path, argv: list[str]) -> int:
    """Run `argv` to its end inside `cgroup` (joined before the exec); returns its exit code."""
    procs = os.open(cgroup / "cgroup.procs", os.O_WRONLY)
    try:
        child = subprocess.Popen(
            argv,
            preexec_fn=lambda: os.write(procs, b"0"),  # noqa: PLW1509 - joins before the exec
            stdout=subprocess.DEVNULL,
        )
        return child.wait(TIMEOUT)
    finally:
        os.close(procs)


def read_until(
    source: KernelSource, done: Callable[[list[pb.Event]], bool]
) -> tuple[list[Item], list[CgroupChange]]:
    """Read (events as read, cgroup changes) until `done` holds for the events so far (compact
    records as the Event messages they stand for), within TIMEOUT."""
    items: list[Item] = []
    changes: list[CgroupChange] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        read = source.read(0.1)
        items.extend(read.events)
        changes.extend(read.cgroups)
        if done([to_event(i) if isinstance(i, tuple) else i for i in items]):
            return items, changes
    raise TimeoutError("the expected events did not arrive in time")


def exec_of(cgroup_id: int, path: str) -> Callable[[list[pb.Event]], bool]:
    """Whether the events hold `path`'s exec in the cgroup `cgroup_id`."""
    return lambda events: any(
        e.cgroup_id == cgroup_id and e.exec.path == path
        for e in events
        if e.WhichOneof("payload") == "exec"
    )


def cat_of(cgroup_id: int) -> Callable[[list[pb.Event]], bool]:
    """Whether the events hold `cat /etc/hostname`'s exec and open in the cgroup `cgroup_id`."""
    return lambda events: (
        exec_of(cgroup_id, "/bin/cat")(events)
        and any(
            e.cgroup_id == cgroup_id and e.file_open.path == "/etc/hostname"
            for e in events
            if e.WhichOneof("payload") == "file_open"
        )
    )


def container_path(layout: str, uid: str, cid: str) -> str:
    """The container's cgroup path in `layout`, of a pod `uid` (dashed UUID)."""
    return LAYOUTS[layout].format(
        uid=uid, sd=uid.replace("-", "_"), cid=cid, outer=uuid.uuid4().hex * 2
    )


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_container_created_after_start_is_tracked(source: KernelSource, layout: str) -> None:
    cid = uuid.uuid4().hex * 2
    with cgroup_chain(container_path(layout, str(uuid.uuid4()), cid)) as container:
        cgroup_id = container.stat().st_ino
        assert run_in(container, ["/bin/cat", "/etc/hostname"]) == 0
        _items, changes = read_until(source, cat_of(cgroup_id))  # its exec and its open
    created = [c for c in changes if c.cgroup_id == cgroup_id and c.created]
    assert [c.path for c in created] == ["/" + str(container.relative_to(cgroup2_mount()))]


def test_kind_container_is_attributed_through_the_api_server(source: KernelSource) -> None:
    cid = uuid.uuid4().hex * 2
    with KubeAPIServer() as server, server.api_client() as client:
        stored = server.add(pod(f"cart-{cid[:6]}", ("StatefulSet", "cart"), {"app": cid}))
        index = PodIndex()
        watcher = kube.PodWatcher(client, "node-a", index, watch_seconds=5, timeout=TIMEOUT)
        watcher.start()
        try:
            assert watcher.synced.wait(TIMEOUT)
            uid = stored["metadata"]["uid"]
            with cgroup_chain(container_path("kind", uid, cid)) as container:
                cgroup_id = container.stat().st_ino
                assert run_in(container, ["/bin/cat", "/etc/hostname"]) == 0
                items, changes = read_until(source, exec_of(cgroup_id, "/bin/cat"))
        finally:
            watcher.stop()
    attributor = Attributor(index, Path("/nonexistent"), hold_seconds=0.0)
    for change in changes:
        attributor.learn(change.cgroup_id, change.path, created=change.created)
    ready = attributor.attribute(items)
    (execd,) = [
        e
        for e in ready.items
        if isinstance(e, pb.Event) and e.cgroup_id == cgroup_id and e.HasField("exec")
    ]
    ref = execd.attribution.workload
    assert (ref.kind, ref.name, ref.container) == ("StatefulSet", "cart", "app")
    assert execd.attribution.container_id == cid


def test_cgroup_outside_the_pod_hierarchies_is_not_tracked(source: KernelSource) -> None:
    with (
        cgroup_chain(f"/pxtest-{uuid.uuid4().hex[:8]}.slice/app.scope") as host,
        cgroup_chain(container_path("cgroupfs", str(uuid.uuid4()), uuid.uuid4().hex * 2)) as marker,
    ):
        assert run_in(host, ["/bin/cat", "/etc/hostname"]) == 0
        assert run_in(marker, ["/bin/cat", "/etc/hostname"]) == 0  # read after the host's
        items, _changes = read_until(source, exec_of(marker.stat().st_ino, "/bin/cat"))
        host_id = host.stat().st_ino
    events = [to_event(i) if isinstance(i, tuple) else i for i in items]
    assert not [e for e in events if e.cgroup_id == host_id]


def test_only_container_cgroups_learn(source: KernelSource) -> None:
    path = container_path("systemd", str(uuid.uuid4()), uuid.uuid4().hex * 2)
    with cgroup_chain(path) as container:
        leaf, pod_slice = container.stat().st_ino, container.parent.stat().st_ino
        deadline, seen = time.monotonic() + TIMEOUT, set()
        while not {leaf, pod_slice} <= seen and time.monotonic() < deadline:  # adopted once read
            seen |= {c.cgroup_id for c in source.read(0.1).cgroups if c.created}
        learning = source.control.syscall_sets()
    assert {leaf, pod_slice} <= seen, "the container and its pod slice are tracked"
    assert leaf in learning and learning[leaf].provisional
    assert pod_slice not in learning, "a pod slice never learns"


def test_cgroup_the_kernel_cannot_track_is_counted() -> None:
    text = probes_with_a_full_map("tracked", "u64", "u32")  # room for one cgroup
    loader = Loader(cgroup2_mount(), text=text)
    try:
        control = Control(loader)
        control.arm_kube(learn=False)
        first = f"/pxtest-{uuid.uuid4().hex[:8]}-kubepods"
        with cgroup_chain(first), cgroup_chain(f"{first}/second"):
            pass
        losses = control.losses()
    finally:
        loader.close()
    assert losses.untracked >= 1, "the second cgroup found the map full"
