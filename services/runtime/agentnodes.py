"""Which node an agent may report events for: the node its certificate names or, for a
certificate that names its pod instead (cert-manager's csi-driver cannot name a node), the node
the API server has bound that pod to. Pure: the pod read is a function passed in (kubepods.py
reads the real API server); the servicer's `_check_node` calls `AgentNodes.check` per batch."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from servicekit.errors import PermissionDenied, Unavailable
from servicekit.pki import PodRef

DEFAULT_AGENT_NAMESPACE = "parallax-agent"  # where deploy/ runs the agent DaemonSet
AGENT_ROLE = "agent"  # servicekit.authz.AGENT, which this pure module does not import
_TERMINATED = ("Succeeded", "Failed")


class Caller(Protocol):
    """The verified caller as servicekit.authz.Identity describes it."""

    @property
    def name(self) -> str: ...
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def node(self) -> str: ...
    @property
    def pod(self) -> PodRef | None: ...


@dataclass(frozen=True)
class Placement:
    """What the API server says of a pod: its UID, the node it is bound to ("" while it is
    unscheduled) and whether it has terminated (phase Succeeded or Failed)."""

    uid: str
    node: str
    terminated: bool


def placement_of(pod: Mapping[str, Any]) -> Placement:
    """The placement of a pod object as the API server serves it. A pod being deleted
    (deletionTimestamp set) has not terminated: its agent still runs on its node and flushes
    its last batches during the grace period."""
    metadata, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
    return Placement(
        uid=str(metadata.get("uid") or ""),
        node=str(spec.get("nodeName") or ""),
        terminated=status.get("phase") in _TERMINATED,
    )


class PodsUnreachable(Exception):
    """A pod read got no answer (API server down, slow, or refusing the runtime's account):
    whether the pod exists is unknown."""


# (namespace, name) -> the pod's placement, or None when there is no such pod; raises
# PodsUnreachable when it cannot tell.
PodReader = Callable[[str, str], Placement | None]


def refusal(pod: PodRef, placement: Placement | None, node: str) -> str | None:
    """Why the agent in `pod` may not report for `node`, given what the API server said of the
    pod; None when it may."""
    where = f"pod {pod.namespace}/{pod.name}"
    if placement is None:
        return f"names {where}, which does not exist"
    if pod.uid and placement.uid != pod.uid:
        return f"was issued to {where} with UID {pod.uid}; that pod is gone (now {placement.uid})"
    if placement.terminated:
        return f"names {where}, which has terminated"
    if not placement.node:
        return f"names {where}, which is not bound to a node"
    if placement.node != node:
        return f"is the agent of node {placement.node} ({where}); it may not report for {node!r}"
    return None


class AgentNodes:
    """Decides, per batch, whether a caller may report for the node the batch names. A pod's
    placement is read through `read` (None: this runtime has no Kubernetes access, so
    pod-named agents are refused) and kept `ttl` seconds of `clock`, at most `capacity` pods;
    a failed read is not kept. Pods outside `namespace` are refused without a read. Agent
    certificates naming neither node nor pod are refused unless `accept_unbound` (one Secret
    shared by every agent, which cannot name either)."""

    def __init__(
        self,
        read: PodReader | None,
        clock: Callable[[], float],
        *,
        namespace: str,
        ttl: float = 30.0,
        accept_unbound: bool = False,
        capacity: int = 4096,
    ) -> None:
        self._read, self._clock, self.namespace, self.ttl = read, clock, namespace, ttl
        self.accept_unbound, self._capacity = accept_unbound, capacity
        self._cache: OrderedDict[tuple[str, str], tuple[float, Placement | None]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, caller: Caller | None, node: str) -> None:
        """Raise PermissionDenied unless `caller` may report for `node`, Unavailable when its
        pod cannot be looked up now. No caller (a plaintext server) may report for any node."""
        if caller is None:
            return
        if caller.node:
            if caller.node != node:
                raise PermissionDenied(
                    f"{caller.name} is the agent of node {caller.node}; it may not report for "
                    f"{node!r}"
                )
        elif caller.pod is not None:
            self._check_pod(caller.name, caller.pod, node)
        elif AGENT_ROLE in caller.roles and not self.accept_unbound:
            raise PermissionDenied(
                f"{caller.name} has the agent role but its certificate names neither a node "
                "(spiffe://parallax/node/<node>) nor a pod (spiffe://parallax/pod/<namespace>/"
                "<name>), so the node it may report for is unknown"
            )

    def _check_pod(self, caller: str, pod: PodRef, node: str) -> None:
        if pod.namespace != self.namespace:
            raise PermissionDenied(
                f"{caller} names pod {pod.namespace}/{pod.name}, outside the agents' namespace "
                f"{self.namespace}"
            )
        if self._read is None:
            raise PermissionDenied(
                f"{caller} names pod {pod.namespace}/{pod.name}, and this runtime has no "
                "Kubernetes access to find its node (PARALLAX_IN_CLUSTER or PARALLAX_KUBECONFIG)"
            )
        reason = refusal(pod, self._placement(caller, pod, self._read), node)
        if reason is not None:
            raise PermissionDenied(f"{caller} {reason}")

    def _placement(self, caller: str, pod: PodRef, read: PodReader) -> Placement | None:
        key, now = (pod.namespace, pod.name), self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        try:
            placement = read(*key)
        except PodsUnreachable as exc:
            raise Unavailable(
                f"cannot find the node of {caller}'s pod {pod.namespace}/{pod.name} now ({exc}); "
                "nothing was accepted, retry later"
            ) from exc
        with self._lock:
            self._cache[key] = (now + self.ttl, placement)
            self._cache.move_to_end(key)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return placement
