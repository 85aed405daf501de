"""NetworkPolicy generation: one networking.k8s.io/v1 policy per workload from its resolved
peers (netpol_flows.py), following the conventions of ../shared/formats.md: stable pod labels,
namespaceSelector only across namespaces, /32 ipBlocks with a DNS side table, one port entry per
observed (peer, port), rules sorted. cilium.py renders the same peers for Cilium."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from services.policygen.cluster import NAMESPACE_LABEL, Pod, stable_labels
from services.policygen.domain import WorkloadId
from services.policygen.peers import Endpoint, Resolution, Resolved

MANAGED_BY = {"app.kubernetes.io/managed-by": "parallax"}


@dataclass(frozen=True)
class DnsEntry:
    """A DNS name and the ipBlock addresses it resolved to."""

    name: str
    addresses: tuple[str, ...]


def policy_name(workload: WorkloadId) -> str:
    """Return the generated policy's name, for example "cart-parallax"."""
    return f"{workload.name}-parallax"


def cidr(address: str) -> str:
    """Return a single-address CIDR (/32 or /128)."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def kubernetes_policy(
    workload: WorkloadId, template: Pod, resolution: Resolution
) -> dict[str, Any]:
    """Build the NetworkPolicy selecting the workload's pods."""
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": stable_labels(template.labels)},
        "policyTypes": ["Ingress", "Egress"],
    }
    for direction, key in (("ingress", "from"), ("egress", "to")):
        rules = _rules(
            template.namespace, [p for p in resolution.peers if p.direction == direction]
        )
        spec[direction] = [{key: [peer], "ports": ports} for peer, ports in rules]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(workload),
            "namespace": template.namespace,
            "labels": dict(MANAGED_BY),
        },
        "spec": spec,
    }


def peer_of(namespace: str, remote: Endpoint) -> dict[str, Any]:
    """Return the NetworkPolicyPeer for a remote end seen from `namespace`."""
    if remote.labels is None:
        return {"ipBlock": {"cidr": cidr(remote.address)}}
    peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(remote.labels)}}
    if remote.namespace != namespace:
        peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: remote.namespace}}
    return peer


def _rules(
    namespace: str, peers: Iterable[Resolved]
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    grouped: dict[str, tuple[dict[str, Any], set[tuple[str, str]]]] = {}
    for resolved in peers:
        peer = peer_of(namespace, resolved.remote)
        key = json.dumps(peer, sort_keys=True)
        grouped.setdefault(key, (peer, set()))[1].add((resolved.protocol, str(resolved.port)))
    return [
        (peer, [_port(protocol, port) for protocol, port in sorted(ports, key=_port_order)])
        for _, (peer, ports) in sorted(grouped.items())
    ]


def _port_order(item: tuple[str, str]) -> tuple[str, int, str]:
    protocol, port = item
    return (protocol, int(port) if port.isdigit() else 0, port)


def _port(protocol: str, port: str) -> dict[str, Any]:
    return {"protocol": protocol, "port": int(port) if port.isdigit() else port}


def dns_entries(resolution: Resolution) -> tuple[DnsEntry, ...]:
    """Return the side table of DNS names behind ipBlock peers, sorted by name."""
    table: dict[str, set[str]] = {}
    for resolved in resolution.peers:
        if resolved.remote.labels is None:
            for name in resolved.dns_names:
                table.setdefault(name, set()).add(resolved.remote.address)
    return tuple(DnsEntry(name, tuple(sorted(table[name]))) for name in sorted(table))


def to_yaml(documents: Iterable[dict[str, Any]]) -> str:
    """Render policies as a YAML stream, keys in Kubernetes order."""
    return yaml.safe_dump_all(list(documents), sort_keys=False)
