"""Agent pods read from the Kubernetes API server for agentnodes.py, and the runtime's settings
for it: which cluster, which namespace the agents run in, how long a pod's node is trusted and
whether agent certificates naming neither node nor pod are accepted. Built by `__main__`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kubernetes.client import ApiClient

from servicekit import kube
from servicekit.config import ConfigError, number, text
from services.runtime.agentnodes import (
    DEFAULT_AGENT_NAMESPACE,
    AgentNodes,
    Placement,
    PodsUnreachable,
    placement_of,
)

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class AgentPodSettings:
    """Read from PARALLAX_KUBECONFIG (a kubeconfig path) or PARALLAX_IN_CLUSTER=true (the
    pod's ServiceAccount), the cluster to find agent pods in (with neither, agents whose
    certificate names a pod are refused); PARALLAX_AGENT_NAMESPACE, where agent pods run
    (default parallax-agent); PARALLAX_AGENT_POD_CACHE_SECONDS, how long a pod's node is
    trusted before it is read again (default 30, 1 to 600); PARALLAX_ACCEPT_UNBOUND_AGENTS=true
    lets agent certificates that name neither node nor pod report for any node (one Secret
    shared by every agent; default false)."""

    kubeconfig: str
    in_cluster: bool
    namespace: str
    cache_seconds: float
    accept_unbound: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentPodSettings:
        """Read and validate the settings."""
        namespace = text(env, "PARALLAX_AGENT_NAMESPACE", DEFAULT_AGENT_NAMESPACE)
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(f"PARALLAX_AGENT_NAMESPACE must be a namespace, got {namespace!r}")
        return cls(
            kubeconfig=text(env, "PARALLAX_KUBECONFIG", ""),
            in_cluster=_flag(env, "PARALLAX_IN_CLUSTER"),
            namespace=namespace,
            cache_seconds=number(
                env, "PARALLAX_AGENT_POD_CACHE_SECONDS", 30.0, low=1.0, high=600.0
            ),
            accept_unbound=_flag(env, "PARALLAX_ACCEPT_UNBOUND_AGENTS"),
        )

    @property
    def cluster_access(self) -> bool:
        """Whether a cluster is configured to read agent pods from."""
        return bool(self.kubeconfig) or self.in_cluster


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = text(env, name, "false").lower()
    if raw not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw == "true"


class KubePods:
    """Reads one agent pod's placement through the official client (servicekit.kube)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def __call__(self, namespace: str, name: str) -> Placement | None:
        try:
            pod = kube.read_pod(self.api, namespace, name)
        except kube.ClusterError as exc:
            raise PodsUnreachable(str(exc)) from exc
        return None if pod is None else placement_of(pod)


def agent_nodes(settings: AgentPodSettings, clock: Callable[[], float]) -> AgentNodes:
    """The node check for the runtime's settings. The cluster client is configured here, so a
    broken configuration fails at start-up; the API server is asked only when an agent whose
    certificate names a pod reports."""
    read = None
    if settings.cluster_access:
        api = kube.api_client_from(settings.kubeconfig or None, None, settings.in_cluster)
        read = KubePods(api)
    return AgentNodes(
        read,
        clock,
        namespace=settings.namespace,
        ttl=settings.cache_seconds,
        accept_unbound=settings.accept_unbound,
    )
