"""Resource and reliability controls RES-01..RES-03 and REL-01..REL-02.

Registered on `REGISTRY` and run by `rules.evaluate` once per container.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.posture.domain import Severity
from services.posture.rules.engine import CONFIRM_REFUTE, NO_SIGNAL, Context, Hit, Meta, Registry
from services.posture.workload import ContainerView, PodView, as_map

REGISTRY = Registry("Resource management")
_WITH_RESOURCES = ("containers", "initContainers")
_BATCH_KINDS = frozenset({"Job", "CronJob"})


def _missing(c: ContainerView, section: str, key: str) -> bool:
    return as_map(as_map(c.body.get("resources")).get(section)).get(key) in (None, "")


@REGISTRY.container(
    Meta(
        "RES-01", "CPU limit missing", Severity.HIGH,
        ks=("C-0270", "C-0050"), ckv=("CKV_K8S_11",), fw="AB DO NSA SEC WS",
        runtime=(CONFIRM_REFUTE, "cgroup CPU usage and throttling over time give a "
                 "data-driven limit that will not break the workload."),
        fix="Set resources.limits.cpu.",
    ),
    groups=_WITH_RESOURCES,
)  # fmt: skip
def cpu_limit(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Without a CPU limit one compromised or runaway container can starve the node."""
    if _missing(c, "limits", "cpu"):
        path = (*c.path, "resources", "limits", "cpu")
        yield Hit(path, f"container {c.name!r} has no CPU limit")


@REGISTRY.container(
    Meta(
        "RES-02", "Memory limit missing", Severity.HIGH,
        ks=("C-0271", "C-0004"), ckv=("CKV_K8S_13",), fw="AB DO NSA SEC WS",
        runtime=(CONFIRM_REFUTE, "peak working set and OOM-kill events size the limit."),
        fix="Set resources.limits.memory.",
    ),
    groups=_WITH_RESOURCES,
)  # fmt: skip
def memory_limit(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Without a memory limit one container can push the node into OOM kills of its neighbours."""
    if _missing(c, "limits", "memory"):
        path = (*c.path, "resources", "limits", "memory")
        yield Hit(path, f"container {c.name!r} has no memory limit")


@REGISTRY.container(
    Meta(
        "RES-03", "CPU or memory requests missing", Severity.LOW,
        ks=("C-0268", "C-0269"), ckv=("CKV_K8S_10", "CKV_K8S_12"), fw="DO",
        runtime=(CONFIRM_REFUTE, "observed steady-state usage sizes the requests."),
        fix="Set resources.requests.cpu and resources.requests.memory.",
    ),
    groups=_WITH_RESOURCES,
)  # fmt: skip
def requests(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Without requests the scheduler over-packs nodes and the pod is first to be evicted. A
    limit without a request is not flagged: Kubernetes defaults the request to the limit."""
    missing = [
        key
        for key in ("cpu", "memory")
        if _missing(c, "requests", key) and _missing(c, "limits", key)
    ]
    if missing:
        path = (*c.path, "resources", "requests")
        yield Hit(path, f"container {c.name!r} has no {' or '.join(missing)} request")


def _long_running(pod: PodView) -> bool:
    return pod.manifest.kind not in _BATCH_KINDS


@REGISTRY.container(
    Meta(
        "REL-01", "Liveness probe missing", Severity.MEDIUM,
        ks=("C-0056",), ckv=("CKV_K8S_8",), fw="DO",
        runtime=(NO_SIGNAL, "restarts and crash loops are kubelet signals."),
        fix="Add a livenessProbe to the container.",
    ),
    groups=("containers",),
)  # fmt: skip
def liveness(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """A hung container without a liveness probe keeps serving errors until someone notices.
    Jobs and CronJobs are exempt."""
    if _long_running(pod) and c.body.get("livenessProbe") is None:
        yield Hit((*c.path, "livenessProbe"), f"container {c.name!r} has no livenessProbe")


@REGISTRY.container(
    Meta(
        "REL-02", "Readiness probe missing", Severity.LOW,
        ks=("C-0018",), ckv=("CKV_K8S_9",), fw="DO",
        runtime=(NO_SIGNAL, "readiness is a kubelet signal."),
        fix="Add a readinessProbe to the container.",
    ),
    groups=("containers",),
)  # fmt: skip
def readiness(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Without a readiness probe traffic reaches containers before they can serve it.
    Jobs and CronJobs are exempt."""
    if _long_running(pod) and c.body.get("readinessProbe") is None:
        yield Hit((*c.path, "readinessProbe"), f"container {c.name!r} has no readinessProbe")
