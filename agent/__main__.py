"""Composition root of the node agent, `python -m agent`: the node self-check, then kernel source
→ attribution → shipper, with pod metadata from the API server, learning targets from the
runtime, metrics over HTTP and a graceful stop on SIGTERM: the probes are detached, what the
kernel, the attributor and the DNS pairing still hold is read, attributed and handed to the
shipper with the final syscall sets and counts, and what the runtime does not acknowledge within
the grace period is counted as lost."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import signal
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from parallax.runtime.v1 import runtime_service_pb2
from parallax.runtime.v1.runtime_service_pb2_grpc import RuntimeServiceStub
from parallax.type.v1 import platform_pb2

from agent import check
from agent.attributed import Attributed, Item
from agent.attribution import kube, paths
from agent.attribution.attributor import Attributor
from agent.attribution.pods import PodIndex
from agent.config import Settings
from agent.learning import LearningSync
from agent.metrics import AgentMetrics
from agent.probes.source import KernelSource
from agent.ship.outbox import DropKey, Outbox
from agent.ship.sender import Sender
from servicekit import logs
from servicekit.channels import connect

log = logging.getLogger("agent")
_ARCHES = {"x86_64": platform_pb2.ARCHITECTURE_X86_64, "aarch64": platform_pb2.ARCHITECTURE_AARCH64}


class CgroupRecord(Protocol):
    """A cgroup created or removed (agent.decode.CgroupChange)."""

    @property
    def cgroup_id(self) -> int:
        """The cgroup's id (its directory inode)."""

    @property
    def path(self) -> str:
        """Its path relative to the v2 root."""

    @property
    def created(self) -> bool:
        """True for creation, False for removal."""


class KernelRead(Protocol):
    """What one read of the kernel side returns: events in read order (Event messages with
    cgroup_id set and attribution empty, or compact records) and the cgroup changes seen since
    the previous read."""

    @property
    def events(self) -> Sequence[Item]:
        """Events in either form, unattributed."""

    @property
    def cgroups(self) -> Sequence[CgroupRecord]:
        """Cgroups created or removed since the previous read."""


class SyscallGate(Protocol):
    """Whether the syscall-recording program is attached (agent.probes.control.Control)."""

    @property
    def syscalls_attached(self) -> bool:
        """True while sys_enter is attached."""


class EventSource(Protocol):
    """The kernel side as the agent's main loop uses it (agent.probes.source.KernelSource)."""

    @property
    def control(self) -> SyscallGate:
        """The probes' control: says whether sys_enter is attached."""

    def read(self, timeout: float) -> KernelRead:
        """Wait at most `timeout` seconds for events, then return what was read."""

    def drops(self) -> Mapping[DropKey, int]:
        """Cumulative drop counters by (EventType, DropSource)."""

    def close(self) -> None:
        """Detach the programs."""


def pump(
    source: EventSource,
    attributor: Attributor,
    sender: Sender,
    metrics: AgentMetrics,
    *,
    stopping: threading.Event,
    poll: float = 0.05,
) -> None:
    """The main loop: read, learn cgroups, attribute, ship, until `stopping` is set."""
    while not stopping.is_set():
        ready = _attribute(attributor, source.read(poll))
        ready.extend(attributor.tick())
        sender.submit(ready)
        sender.set_drops(dict(source.drops()))
        metrics.held.set(attributor.held)
        metrics.sys_enter_attached.set(source.control.syscalls_attached)


def _attribute(attributor: Attributor, read: KernelRead) -> Attributed:
    """Note the paths of the cgroups `read` saw created (their start is observed), then
    attribute its events."""
    for change in read.cgroups:
        if change.created:
            attributor.learn(change.cgroup_id, change.path, created=True)
    return attributor.attribute(read.events)


# Reads of the last pass at most: bounded even if something attached a probe again meanwhile.
FINAL_READS = 100


def finish(source: KernelSource, attributor: Attributor) -> Attributed:
    """The graceful stop's last pass: detach every probe so that no new kernel event comes,
    drain the ring and read what is queued (noting new cgroups' paths, attributing), release
    the DNS queries still waiting for an answer, add each learning cgroup's final syscall set
    and the counts grown since the last report, then end every hold (released with their
    unattributed reason). Returns the events for the shipper; the maps stay readable until the
    source is closed."""
    for group in source.loader.attached:
        source.loader.detach(group)
    source.consumer.stop()  # joins the drain thread, then drains what the ring holds
    ready = Attributed()
    for _ in range(FINAL_READS):
        read = source.read(0.0)
        if not (read.events or read.cgroups):
            break
        ready.extend(_attribute(attributor, read))
        source.consumer.consume()  # what a full queue had left in the ring
    last = [*source.dns.expire(everything=True), *source.syscall_sets(), *source.counts.report()]
    ready.extend(attributor.attribute(last))
    ready.extend(attributor.tick(everything=True))  # one rescan, then release all
    return ready


def stop_sender(sender: Sender, outbox: Outbox, grace: float) -> int:
    """Stop the sender with its bounded grace; returns how many events the runtime did not
    acknowledge (lost with this process: logged, since nothing can report them any more)."""
    if sender.stop(grace):
        return 0
    lost = outbox.buffered
    log.error(
        "stopped with %d events not acknowledged by the runtime within the %.0fs grace period; "
        "they are lost (raise PARALLAX_GRACE_SECONDS or check the runtime's health)",
        lost,
        grace,
    )
    return lost


def header(agent_id: str, node_name: str) -> runtime_service_pb2.ReportEventsRequest:
    """The fields every batch of one session repeats (a new session id per call)."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return runtime_service_pb2.ReportEventsRequest(
        agent_id=agent_id,
        node_name=node_name,
        boot_id=boot,
        session_id=str(uuid.uuid4()),
        agent_version=importlib.metadata.version("parallax"),
        kernel_release=platform.release(),
        arch=_ARCHES.get(platform.machine(), platform_pb2.ARCHITECTURE_UNSPECIFIED),
    )


def main() -> None:
    """Run the agent until SIGTERM or SIGINT."""
    settings = Settings.from_env(os.environ)
    logs.configure("agent", settings.log_level)
    failed = [r for r in check.run_checks(settings.cgroup_root) if not r.ok]
    for result in failed:
        log.error("agent check %s failed: %s", result.name, result.detail)
    if failed:
        raise SystemExit(f"the node cannot run the agent: {failed[0].detail}")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    metrics = AgentMetrics()
    metrics.serve(settings.metrics_address, settings.metrics_port)
    index, client = PodIndex(), kube.api_client(settings.kube_mode, settings.kubeconfig)
    watcher = kube.PodWatcher(client, settings.node_name, index) if client else None
    if watcher:
        watcher.start()
    walk = functools.partial(paths.walk, str(settings.cgroup_root))
    attributor = Attributor(
        index,
        settings.pod_registry,
        hold_seconds=settings.hold_seconds,
        hold_limit=settings.hold_events,
        rescan=walk,
    )
    for cgroup_id, path in walk():
        attributor.learn(cgroup_id, path)
    outbox = Outbox(
        header(settings.agent_id, settings.node_name),
        batch_events=settings.batch_events,
        batch_latency=settings.batch_latency,
        buffer_events=settings.buffer_events,
        records=settings.records,
    )
    credentials = settings.runtime_tls.channel_credentials() if settings.runtime_tls else None
    source = KernelSource(
        settings.cgroup_root,
        walk(),
        lambda path: paths.parse(path) is not None,
        learn_new=settings.learn_new,
        report_every=settings.report_seconds,
    )
    with connect(settings.runtime_address, credentials=credentials) as channel:
        sender = Sender(outbox, channel, metrics, ack_timeout=settings.ack_timeout)
        sender.start()
        learning = LearningSync(RuntimeServiceStub(channel), settings.node_name, source.control)
        learning.start()
        log.info("agent ready: probes attached, shipping to %s", settings.runtime_address)
        try:
            pump(source, attributor, sender, metrics, stopping=stopping)
        finally:
            learning.stop()
            learning.poll()  # a last round: containers claimed since ship their start-up sets
            try:
                last = finish(source, attributor)
                log.info("stopping: %d events of the last pass handed to the shipper", len(last))
                sender.submit(last)
                sender.set_drops(dict(source.drops()))
            finally:
                source.close()
                stop_sender(sender, outbox, settings.grace_seconds)
                if watcher:
                    watcher.stop()


if __name__ == "__main__":
    main()
