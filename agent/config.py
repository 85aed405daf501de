"""Settings of the node agent, read once from the environment by `agent.__main__`: where the
runtime service is, who this agent is, how it batches and buffers, how long it holds events of
unknown cgroups, where it serves metrics and how it reaches the API server."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servicekit import tls
from servicekit.config import ConfigError, address, integer, number, text

KUBE_MODES = ("auto", "off", "in-cluster", "kubeconfig")
_UNIFIED = Path("/sys/fs/cgroup/unified")  # hybrid hosts mount cgroup v2 here


def _cgroup_root(env: Mapping[str, str]) -> Path:
    raw = env.get("PARALLAX_CGROUP_ROOT")
    if raw:
        return Path(raw)
    return _UNIFIED if (_UNIFIED / "cgroup.controllers").exists() else Path("/sys/fs/cgroup")


def _kube_mode(env: Mapping[str, str]) -> str:
    mode = text(env, "PARALLAX_KUBE", "auto")
    if mode not in KUBE_MODES:
        raise ConfigError(f"PARALLAX_KUBE must be one of {', '.join(KUBE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster"
    return "kubeconfig" if env.get("PARALLAX_KUBECONFIG") else "off"


@dataclass(frozen=True)
class Settings:
    """Everything the agent reads from the environment, validated."""

    runtime_address: str
    runtime_tls: tls.TlsMaterial | None
    node_name: str
    agent_id: str
    metrics_address: str
    metrics_port: int
    batch_events: int
    batch_latency: float
    buffer_events: int
    ack_timeout: float
    hold_seconds: float
    hold_events: int
    kube_mode: str  # "off", "in-cluster" or "kubeconfig" once read
    kubeconfig: str
    cgroup_root: Path
    pod_registry: Path
    log_level: str
    grace_seconds: float
    learn_new: bool
    report_seconds: float
    records: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate; PARALLAX_RUNTIME_ADDRESS is required."""
        node = text(env, "PARALLAX_NODE_NAME", env.get("NODE_NAME") or socket.gethostname())
        # As many events a batch as the runtime takes: per event, a busy node's batches cost the
        # runtime about 10% less at 10,000 than at 5,000 (bench/runtime_ingest.py).
        batch = integer(env, "PARALLAX_BATCH_EVENTS", 10_000, low=1, high=10_000)
        return cls(
            runtime_address=address(env, "PARALLAX_RUNTIME_ADDRESS", None),
            runtime_tls=tls.from_env(env),
            node_name=node,
            agent_id=text(env, "PARALLAX_AGENT_ID", node),
            # Prometheus scrapes the agent from outside the node: all interfaces by default.
            metrics_address=text(env, "PARALLAX_METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104
            metrics_port=integer(env, "PARALLAX_METRICS_PORT", 9464, low=0, high=65535),
            batch_events=batch,
            batch_latency=number(env, "PARALLAX_BATCH_LATENCY", 0.2, low=0.001, high=10.0),
            buffer_events=integer(env, "PARALLAX_BUFFER_EVENTS", 200_000, low=batch, high=10**7),
            ack_timeout=number(env, "PARALLAX_ACK_TIMEOUT", 10.0, low=0.1, high=300.0),
            hold_seconds=number(env, "PARALLAX_HOLD_SECONDS", 2.0, low=0.0, high=60.0),
            hold_events=integer(env, "PARALLAX_HOLD_EVENTS", 10_000, low=0, high=10**6),
            kube_mode=_kube_mode(env),
            kubeconfig=text(env, "PARALLAX_KUBECONFIG", ""),
            cgroup_root=_cgroup_root(env),
            pod_registry=Path(text(env, "PARALLAX_POD_REGISTRY", "/run/parallax/pods")),
            log_level=text(env, "PARALLAX_LOG_LEVEL", "INFO").upper(),
            grace_seconds=number(env, "PARALLAX_GRACE_SECONDS", 5.0, low=0.0, high=300.0),
            # Learn each new container's syscalls provisionally from its cgroup's creation, so
            # the profile of a learning workload includes its start-up; the set is kept only if
            # the runtime lists the container as a learning target (agent.probes.control). The
            # sys_enter tax (bench/agent_overhead.py) is paid only while some workload is in its
            # learning window or a new container awaits the runtime's answer.
            learn_new=text(env, "PARALLAX_LEARN_NEW", "true").lower() == "true",
            # How often learning cgroups' syscall sets (and de-duplicated counts) are reported;
            # a learning window must be longer than this to see the last report.
            report_seconds=number(env, "PARALLAX_REPORT_SECONDS", 5.0, low=0.1, high=600.0),
            # Ship high-volume events as packed records (EventRecords) to a runtime that reads
            # them; "false" sends one Event message each, several times the CPU per event.
            records=text(env, "PARALLAX_AGENT_RECORDS", "true").lower() == "true",
        )
