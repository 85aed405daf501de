"""Attribution: cgroup path shapes of real nodes, pod metadata through the official client from
a local Kubernetes API server (list, then watch), local pods, and events of unknown cgroups
held, then shipped unattributed and counted, never as a wrong pod."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from parallax.runtime.v1 import event_pb2, runtime_service_pb2

from agent.attribution import kube, paths
from agent.attribution.attributor import Attributor
from agent.attribution.pods import PodIndex, pod_from
from agent.ship.outbox import Outbox
from tests.kubeapi import KubeAPIServer

TIMEOUT = 10.0
UID = "1f2e3d4c-5b6a-4789-8abc-def012345678"
SD_UID = UID.replace("-", "_")
CID = "a" * 64
STATIC = "6e4a8f0ba7b5b1a6a2c49d3b4e9d1a1f"
NOT_A_CONTAINER = event_pb2.UNATTRIBUTED_REASON_NOT_A_CONTAINER
BURSTABLE = "/kubepods.slice/kubepods-burstable.slice"
SD_BURSTABLE = f"{BURSTABLE}/kubepods-burstable-pod{SD_UID}.slice"
SD_BESTEFFORT = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SD_UID}.slice"
SD_GUARANTEED = f"/kubepods.slice/kubepods-pod{SD_UID}.slice"
KIND = (
    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    f"kubelet-kubepods-besteffort-pod{SD_UID}.slice"
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{SD_BURSTABLE}/cri-containerd-{CID}.scope", paths.KubeRef(UID, CID, "containerd")),
        (f"{SD_GUARANTEED}/cri-containerd-{CID}.scope", paths.KubeRef(UID, CID, "containerd")),
        (f"{SD_BESTEFFORT}/crio-{CID}.scope", paths.KubeRef(UID, CID, "cri-o")),
        (f"{SD_BURSTABLE}/docker-{CID}.scope", paths.KubeRef(UID, CID, "docker")),
        (f"/kubepods/burstable/pod{UID}/{CID}", paths.KubeRef(UID, CID, "")),
        (f"/kubepods/pod{UID}/{CID}", paths.KubeRef(UID, CID, "")),
        (f"/kubepods/besteffort/pod{UID}/crio-{CID}", paths.KubeRef(UID, CID, "cri-o")),
        (f"{KIND}/cri-containerd-{CID}.scope", paths.KubeRef(UID, CID, "containerd")),
        (
            f"/system.slice/docker-{'b' * 64}.scope/kubepods/burstable/pod{UID}/{CID}",
            paths.KubeRef(UID, CID, ""),
        ),
        (
            f"{SD_GUARANTEED}/cri-containerd-{CID}.scope/init.scope",
            paths.KubeRef(UID, CID, "containerd"),
        ),
        (f"/kubepods/burstable/pod{STATIC}/{CID}", paths.KubeRef(STATIC, CID, "")),
        (SD_BURSTABLE, paths.KubeRef(UID, "", "")),
        (f"{SD_GUARANTEED}/crio-conmon-{CID}.scope", paths.KubeRef(UID, "", "")),
        ("/parallax/shop/cart", paths.LocalRef("shop", "cart")),
        ("/system.slice/containerd.service", None),
        (f"/system.slice/docker-{CID}.scope", None),
        (f"/user.slice/pod{UID}/{CID}", None),
        ("/kubepods.slice/kubepods-podnot-a-uid.slice", None),
        ("/", None),
    ],
    ids=[
        "systemd-containerd-burstable",
        "systemd-containerd-guaranteed",
        "systemd-crio",
        "systemd-docker",
        "cgroupfs-containerd",
        "cgroupfs-guaranteed",
        "cgroupfs-crio",
        "kind",
        "nested-in-docker",
        "sub-cgroup-of-container",
        "static-pod",
        "pod-slice",
        "crio-conmon",
        "local-pod",
        "host-service",
        "host-docker",
        "no-kubepods",
        "bad-uid",
        "root",
    ],
)
def test_parse_cgroup_paths(path: str, expected: paths.CgroupRef | None) -> None:
    assert paths.parse(path) == expected


def test_walk_yields_directory_inodes_parents_first(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "file").write_text("not a cgroup")
    found = list(paths.walk(str(tmp_path)))
    assert [p for _, p in found] == ["/", "/a", "/a/b", "/c"]
    assert all(os.stat(tmp_path / p.lstrip("/")).st_ino == i for i, p in found)


def _ref(kind: str, name: str) -> dict[str, Any]:
    api = {"ReplicaSet": "apps/v1", "Job": "batch/v1", "Deployment": "apps/v1"}.get(kind, "v1")
    return {
        "apiVersion": api,
        "kind": kind,
        "name": name,
        "uid": str(uuid.uuid4()),
        "controller": True,
    }


def pod(
    name: str,
    owner: tuple[str, str] | None,
    containers: dict[str, str],
    node: str = "node-a",
    **meta: Any,
) -> dict[str, Any]:
    """A pod as the kubelet reports it: spec containers and their statuses with runtime IDs."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"app": name},
            "ownerReferences": [_ref(*owner)] if owner else [],
            **meta,
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": c, "image": f"ghcr.io/acme/{c}:1.4"} for c in containers],
        },
        "status": {
            "containerStatuses": [
                {
                    "name": c,
                    "containerID": f"containerd://{cid}",
                    "image": f"ghcr.io/acme/{c}:1.4",
                    "imageID": f"ghcr.io/acme/{c}@sha256:{'d' * 64}",
                }
                for c, cid in containers.items()
            ]
        },
    }


def workload(
    obj: dict[str, Any], owners: dict[tuple[str, str], tuple[str, str]]
) -> tuple[str, str]:
    info = pod_from(
        {**obj, "metadata": {**obj["metadata"], "uid": UID}}, lambda _ns, k, n: owners.get((k, n))
    )
    return info.kind, info.workload


@pytest.mark.parametrize(
    ("owner", "parents", "expected"),
    [
        (
            ("ReplicaSet", "cart-5d9c"),
            {("ReplicaSet", "cart-5d9c"): ("Deployment", "cart")},
            ("Deployment", "cart"),
        ),
        (("ReplicaSet", "orphan-1"), {}, ("ReplicaSet", "orphan-1")),
        (
            ("Job", "report-289"),
            {("Job", "report-289"): ("CronJob", "report")},
            ("CronJob", "report"),
        ),
        (("StatefulSet", "db"), {}, ("StatefulSet", "db")),
        (("Node", "node-a"), {}, ("Pod", "p")),
        (None, {}, ("Pod", "p")),
    ],
    ids=["deployment", "bare-replicaset", "cronjob", "statefulset", "static-mirror", "bare-pod"],
)
def test_owner_workload(
    owner: tuple[str, str] | None,
    parents: dict[tuple[str, str], tuple[str, str]],
    expected: tuple[str, str],
) -> None:
    assert workload(pod("p", owner, {"app": CID}), parents) == expected


def test_mirror_pod_is_found_by_the_static_pod_hash() -> None:
    index = PodIndex()
    obj = pod(
        "etcd",
        ("Node", "node-a"),
        {"etcd": CID},
        annotations={"kubernetes.io/config.mirror": STATIC},
    )
    index.put(pod_from({**obj, "metadata": {**obj["metadata"], "uid": UID}}, lambda *_: None))
    found = index.get(STATIC)
    assert found is not None and found.name == "etcd"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(cgroup_id: int, path: str = "/bin/true") -> event_pb2.Event:
    return event_pb2.Event(cgroup_id=cgroup_id, pid=42, exec=event_pb2.Exec(path=path))


@pytest.fixture
def kube_api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


def test_events_attributed_to_pod_container_and_owner_workload(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    deployment = kube_api.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {},
        }
    )
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "cart-5d9c",
            "namespace": "shop",
            "ownerReferences": [
                {**_ref("Deployment", "cart"), "uid": deployment["metadata"]["uid"]}
            ],
        },
    }
    kube_api.add(rs)
    cart = kube_api.add(
        pod("cart-5d9c-x2k", ("ReplicaSet", "cart-5d9c"), {"app": CID, "sidecar": "b" * 64})
    )
    kube_api.add(pod("elsewhere", None, {"app": "c" * 64}, node="node-b"))
    index = PodIndex()
    with kube_api.api_client() as client:
        watcher = kube.PodWatcher(client, "node-a", index, watch_seconds=5, timeout=TIMEOUT)
        watcher.start()
        try:
            assert watcher.synced.wait(TIMEOUT)
            clock = Clock()
            attributor = Attributor(index, tmp_path, hold_seconds=2.0, clock=clock)
            uid = cart["metadata"]["uid"].replace("-", "_")
            pod_slice = (
                f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
            )
            attributor.learn(101, f"{pod_slice}/cri-containerd-{CID}.scope")
            attributor.learn(102, f"{pod_slice}/cri-containerd-{'b' * 64}.scope")
            app, sidecar = attributor.attribute([event(101), event(102)]).items
            # A pod that starts after the list: its container's cgroup exists before the kubelet
            # reports the container, so its events wait for the watch to bring the status.
            kube_api.add(
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {
                        "name": "report-289",
                        "namespace": "shop",
                        "ownerReferences": [_ref("CronJob", "report")],
                    },
                }
            )
            starting = pod("report-289-abc", ("Job", "report-289"), {"report": "e" * 64})
            report = kube_api.add({**starting, "status": {}})
            report_uid = report["metadata"]["uid"]
            assert index.wait_for(lambda i: i.get(report_uid) is not None, TIMEOUT)
            attributor.learn(201, f"/kubepods/besteffort/pod{report_uid}/{'e' * 64}")
            assert attributor.attribute([event(201)]).items == []
            assert attributor.tick().items == []
            kube_api.update({**starting, "metadata": report["metadata"]})
            assert index.wait_for(lambda i: bool(i.get(report_uid).containers), TIMEOUT)  # type: ignore[union-attr]
            (job_event,) = attributor.tick().items
        finally:
            watcher.stop()
    assert app.attribution.workload.namespace == "shop"
    assert (app.attribution.workload.kind, app.attribution.workload.name) == ("Deployment", "cart")
    assert (app.attribution.workload.pod, app.attribution.workload.container) == (
        "cart-5d9c-x2k",
        "app",
    )
    assert app.attribution.image == "ghcr.io/acme/app:1.4"
    assert app.attribution.image_digest == "sha256:" + "d" * 64
    assert (app.attribution.pod_uid, app.attribution.container_id) == (cart["metadata"]["uid"], CID)
    assert sidecar.attribution.workload.container == "sidecar"
    assert (job_event.attribution.workload.kind, job_event.attribution.workload.name) == (
        "CronJob",
        "report",
    )
    assert job_event.attribution.workload.container == "report"
    assert attributor.held == 0
    selectors = {
        r.query.get("fieldSelector") for r in kube_api.requests if r.path == "/api/v1/pods"
    }
    assert selectors == {"spec.nodeName=node-a"}
    assert {r.query.get("watch") for r in kube_api.requests if r.path == "/api/v1/pods"} >= {"true"}


def header() -> runtime_service_pb2.ReportEventsRequest:
    return runtime_service_pb2.ReportEventsRequest(agent_id="a", session_id="s")


def test_unknown_cgroup_held_then_shipped_unattributed_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    attributor = Attributor(PodIndex(), tmp_path, hold_seconds=2.0, clock=clock)
    assert attributor.attribute([event(7), event(7)]).items == []
    clock.now += 1.9
    assert attributor.tick().items == [] and attributor.held == 2
    clock.now += 0.2
    released = attributor.tick().items
    assert [e.attribution.unattributed_reason for e in released] == [
        event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    ] * 2
    assert all(not e.attribution.HasField("workload") for e in released)
    outbox = Outbox(header(), batch_latency=0.0, clock=clock)
    outbox.add(released)
    batch = outbox.seal()
    assert batch is not None
    (count,) = batch.request.unattributed_counts
    assert (count.cgroup_id, count.event_type, count.count) == (7, event_pb2.EVENT_TYPE_EXEC, 2)
    assert count.reason == event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP


def test_at_the_stop_every_hold_ends_at_once_after_one_rescan(tmp_path: Path) -> None:
    rescans: list[int] = []
    attributor = Attributor(
        PodIndex(),
        tmp_path,
        hold_seconds=60.0,
        clock=Clock(),
        rescan=lambda: rescans.append(1) or [],
    )
    assert attributor.attribute([event(7), event(8)]).items == []
    released = attributor.tick(everything=True).items
    assert [e.attribution.unattributed_reason for e in released] == [
        event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    ] * 2
    assert attributor.held == 0 and rescans == [1]


def test_hold_is_bounded_in_count_oldest_released_first(tmp_path: Path) -> None:
    attributor = Attributor(PodIndex(), tmp_path, hold_limit=2, clock=Clock())
    first, second, third = event(1, "/first"), event(2, "/second"), event(3, "/third")
    released = attributor.attribute([first, second, third]).items
    assert [e.exec.path for e in released] == ["/first"]
    assert (
        released[0].attribution.unattributed_reason == event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    )
    assert attributor.held == 2


def test_no_hold_releases_unknown_cgroups_at_once(tmp_path: Path) -> None:
    attributor = Attributor(PodIndex(), tmp_path, hold_limit=0, clock=Clock())
    (released,) = attributor.attribute([event(7)]).items
    assert released.attribution.unattributed_reason == event_pb2.UNATTRIBUTED_REASON_UNKNOWN_CGROUP
    assert attributor.held == 0


def test_known_pod_with_unknown_container_is_never_guessed(tmp_path: Path) -> None:
    clock, index = Clock(), PodIndex()
    obj = pod("cart", None, {"app": CID})
    index.put(pod_from({**obj, "metadata": {**obj["metadata"], "uid": UID}}, lambda *_: None))
    attributor = Attributor(index, tmp_path, hold_seconds=1.0, clock=clock)
    attributor.learn(9, f"/kubepods/pod{UID}/{'f' * 64}")  # the pause container, say
    assert attributor.attribute([event(9)]).items == []
    clock.now += 1.0
    (released,) = attributor.tick().items
    reason = released.attribution.unattributed_reason
    assert reason == event_pb2.UNATTRIBUTED_REASON_METADATA_UNAVAILABLE
    assert not released.attribution.HasField("workload")
    assert not released.attribution.pod_uid  # an event with a pod UID counts as attributed


@pytest.mark.parametrize(
    ("cgroup_id", "path", "reason"),
    [
        (0, None, event_pb2.UNATTRIBUTED_REASON_NO_CGROUP),
        (5, "/system.slice/sshd.service", NOT_A_CONTAINER),
        (6, f"/kubepods/pod{UID}", NOT_A_CONTAINER),
    ],
    ids=["no-task-context", "host-service", "pod-cgroup-itself"],
)
def test_final_reasons_are_not_held(cgroup_id: int, path: str | None, reason: int) -> None:
    attributor = Attributor(PodIndex(), Path("/nonexistent"), clock=Clock())
    if path is not None:
        attributor.learn(cgroup_id, path)
    (shipped,) = attributor.attribute([event(cgroup_id)]).items
    assert shipped.attribution.unattributed_reason == reason


def test_deleted_pod_keeps_attributing_late_events_then_is_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    index = PodIndex(linger=30.0, clock=clock)
    obj = pod("cart", None, {"app": CID})
    index.put(pod_from({**obj, "metadata": {**obj["metadata"], "uid": UID}}, lambda *_: None))
    index.delete(UID)
    assert index.get(UID) is not None
    clock.now += 30.0
    assert index.get(UID) is None


def test_local_pod_from_registry_file_after_its_cgroup(tmp_path: Path) -> None:
    clock = Clock()
    attributor = Attributor(PodIndex(), tmp_path, hold_seconds=2.0, clock=clock)
    attributor.learn(77, "/parallax/shop/cart")
    assert attributor.attribute([event(77)]).items == []
    entry = '{"namespace": "shop", "pod": "cart", "labels": {"app": "cart"}, "container": "main"}'
    (tmp_path / "77.json").write_text(entry)
    (released,) = attributor.tick().items
    ref = released.attribution.workload
    assert (ref.namespace, ref.kind, ref.name, ref.pod, ref.container) == (
        "shop",
        "Pod",
        "cart",
        "cart",
        "main",
    )
    assert uuid.UUID(released.attribution.pod_uid)


V2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def kubepods_cgroup() -> Iterator[Path]:
    """A real, empty v2 cgroup at a kubepods path (systemd driver, containerd)."""
    if os.geteuid() != 0 or not (V2 / "cgroup.controllers").exists():
        pytest.skip("needs root and cgroup v2 at /sys/fs/cgroup/unified")
    top = V2 / f"kubepods-test-{uuid.uuid4().hex[:8]}.slice"
    leaf = top / f"kubepods-besteffort-pod{SD_UID}.slice" / f"cri-containerd-{CID}.scope"
    leaf.mkdir(parents=True)
    try:
        yield leaf
    finally:
        for directory in (leaf, leaf.parent, top):
            directory.rmdir()


def test_real_cgroup_learned_by_walk_is_attributed_by_inode(
    kubepods_cgroup: Path, tmp_path: Path
) -> None:
    index = PodIndex()
    obj = pod("cart", ("StatefulSet", "cart"), {"app": CID})
    index.put(pod_from({**obj, "metadata": {**obj["metadata"], "uid": UID}}, lambda *_: None))
    attributor = Attributor(index, tmp_path, clock=Clock())
    for cgroup_id, path in paths.walk(str(V2)):
        attributor.learn(cgroup_id, path)
    (shipped,) = attributor.attribute([event(os.stat(kubepods_cgroup).st_ino)]).items
    ref = shipped.attribution.workload
    assert (ref.kind, ref.name, ref.pod, ref.container) == ("StatefulSet", "cart", "cart", "app")
    assert shipped.attribution.cgroup_start == event_pb2.CGROUP_START_MISSED  # it existed


def test_an_attribution_says_whether_the_cgroup_creation_was_seen(tmp_path: Path) -> None:
    """Learned from cgroup_mkdir: the container's start is observed; from a walk: missed."""
    attributor = Attributor(PodIndex(), tmp_path, clock=Clock())
    entry = '{"namespace": "shop", "pod": "cart", "labels": {}, "container": "main"}'
    for cgroup_id, created in ((77, True), (78, False)):
        (tmp_path / f"{cgroup_id}.json").write_text(entry.replace("cart", f"cart-{cgroup_id}"))
        attributor.learn(cgroup_id, f"/parallax/shop/cart-{cgroup_id}", created=created)
    seen, walked = attributor.attribute([event(77), event(78)]).items
    assert seen.attribution.cgroup_start == event_pb2.CGROUP_START_OBSERVED
    assert walked.attribution.cgroup_start == event_pb2.CGROUP_START_MISSED


def test_unknown_cgroup_found_by_rescan_while_held(kubepods_cgroup: Path, tmp_path: Path) -> None:
    index = PodIndex()
    obj = pod("cart", None, {"app": CID})
    index.put(pod_from({**obj, "metadata": {**obj["metadata"], "uid": UID}}, lambda *_: None))
    attributor = Attributor(index, tmp_path, clock=Clock(), rescan=lambda: paths.walk(str(V2)))
    assert attributor.attribute([event(os.stat(kubepods_cgroup).st_ino)]).items == []
    (shipped,) = attributor.tick().items
    assert shipped.attribution.workload.pod == "cart"


def test_local_registry_entry_of_another_pod_is_refused(tmp_path: Path) -> None:
    from agent.attribution.pods import read_local

    (tmp_path / "42.json").write_text('{"namespace": "shop", "pod": "old", "ended": 1}')
    assert read_local(tmp_path, 42, ("shop", "old")) is not None
    # cgroup ids are inodes: a new pod reusing inode 42 must not inherit the old pod's identity
    assert read_local(tmp_path, 42, ("shop", "new")) is None


def test_local_registry_entry_gives_image_digest_and_owner(tmp_path: Path) -> None:
    """What `parallax run --image --image-digest --kind --workload` registers becomes the
    attribution; without an owner the pod is its own workload, kind Pod."""
    from agent.attribution.pods import read_local

    digest = "sha256:" + "ab" * 32
    owned = {
        "namespace": "shop",
        "pod": "cart-1",
        "container": "server",
        "image": "ghcr.io/acme/cart:1.4",
        "image_digest": digest,
        "kind": "Deployment",
        "workload": "cart",
    }
    (tmp_path / "42.json").write_text(json.dumps(owned))
    (tmp_path / "43.json").write_text('{"namespace": "shop", "pod": "bare", "image_digest": ""}')
    got = read_local(tmp_path, 42, ("shop", "cart-1"))
    bare = read_local(tmp_path, 43)
    assert got is not None and bare is not None
    assert (got.image, got.image_digest) == ("ghcr.io/acme/cart:1.4", digest)
    ref = got.workload
    assert (ref.namespace, ref.kind, ref.name, ref.pod, ref.container) == (
        "shop",
        "Deployment",
        "cart",
        "cart-1",
        "server",
    )
    assert (bare.image, bare.image_digest) == ("", "")
    assert (bare.workload.kind, bare.workload.name) == ("Pod", "bare")
