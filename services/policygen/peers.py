"""The vocabulary of resolved network peers shared by the generators and the evaluator: flow
endpoints, the kind of a remote end, and one observed (peer, port) in policy terms."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.policygen.cluster import ContainerPort


class PeerKind(enum.Enum):
    """How a remote end is expressed in a policy."""

    POD = "pod"
    DNS = "dns"
    API_SERVER = "api-server"
    HOST = "host"
    EXTERNAL = "external"
    UNRESOLVED = "unresolved"


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow: a pod (labels set) or a bare address (labels None)."""

    address: str
    namespace: str = ""
    labels: dict[str, str] | None = None
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True)
class Resolved:
    """One observed (peer, port) in policy terms; `port` is after DNAT, a number or a name."""

    direction: str
    kind: PeerKind
    remote: Endpoint
    protocol: str
    port: int | str
    dns_names: tuple[str, ...] = ()


@dataclass
class Resolution:
    """The resolved peers of a workload with the notes explaining special cases."""

    subject: Endpoint
    peers: list[Resolved] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def note(self, kind: str, message: str) -> None:
        """Record a note once."""
        if (kind, message) not in self.notes:
            self.notes.append((kind, message))


@dataclass(frozen=True)
class Flow:
    """One connection after DNAT: `port` is the destination pod's port."""

    source: Endpoint
    destination: Endpoint
    protocol: str
    port: int
    dns_names: tuple[str, ...] = ()


def flows(resolution: Resolution) -> list[Flow]:
    """Return the resolved peers as flows after DNAT (a named port is resolved against the
    destination's container ports; one no pod declares is left out)."""
    found: list[Flow] = []
    for peer in resolution.peers:
        egress = peer.direction == "egress"
        source, destination = (
            (resolution.subject, peer.remote) if egress else (peer.remote, resolution.subject)
        )
        port = peer.port
        if isinstance(port, str):
            named = [p.port for p in destination.ports if p.name == port]
            if not named:
                continue
            port = named[0]
        found.append(Flow(source, destination, peer.protocol, port, peer.dns_names))
    return found
