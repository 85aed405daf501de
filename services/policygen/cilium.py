"""CiliumNetworkPolicy (cilium.io/v2) rendering of a workload's resolved peers: endpoints by
labels, toFQDNs for DNS-named external peers (with the DNS proxy rule toFQDNs needs), entities
for the API server and host-network peers, toCIDR for the rest."""

from __future__ import annotations

import json
from typing import Any

from services.policygen.cluster import Pod, stable_labels
from services.policygen.domain import WorkloadId
from services.policygen.netpol_gen import MANAGED_BY, cidr, policy_name
from services.policygen.peers import PeerKind, Resolution, Resolved

NAMESPACE_KEY = "k8s:io.kubernetes.pod.namespace"


def cilium_policy(workload: WorkloadId, template: Pod, resolution: Resolution) -> dict[str, Any]:
    """Build the CiliumNetworkPolicy selecting the workload's pods."""
    spec: dict[str, Any] = {"endpointSelector": {"matchLabels": stable_labels(template.labels)}}
    for direction in ("ingress", "egress"):
        peers = [p for p in resolution.peers if p.direction == direction]
        grouped: dict[str, tuple[dict[str, Any], list[Resolved]]] = {}
        for resolved in peers:
            selector = _selector(template.namespace, resolved, direction)
            key = json.dumps(selector, sort_keys=True)
            grouped.setdefault(key, (selector, []))[1].append(resolved)
        # An empty rule keeps the direction in default-deny when nothing was observed.
        spec[direction] = [_rule(s, group) for _, (s, group) in sorted(grouped.items())] or [{}]
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": policy_name(workload),
            "namespace": template.namespace,
            "labels": dict(MANAGED_BY),
        },
        "spec": spec,
    }


def _selector(namespace: str, resolved: Resolved, direction: str) -> dict[str, Any]:
    remote = resolved.remote
    prefix = "from" if direction == "ingress" else "to"
    if resolved.kind is PeerKind.API_SERVER:
        return {"toEntities": ["kube-apiserver"]}
    if resolved.kind is PeerKind.HOST:
        return {f"{prefix}Entities": ["host", "remote-node"]}
    if remote.labels is not None:
        labels = dict(remote.labels)
        if remote.namespace != namespace:
            labels[NAMESPACE_KEY] = remote.namespace
        return {f"{prefix}Endpoints": [{"matchLabels": labels}]}
    if resolved.kind is PeerKind.EXTERNAL and direction == "egress":
        return {"toFQDNs": [{"matchName": name} for name in sorted(resolved.dns_names)]}
    return {f"{prefix}CIDR": [cidr(remote.address)]}


def _rule(selector: dict[str, Any], group: list[Resolved]) -> dict[str, Any]:
    ports = sorted({(r.protocol, str(r.port)) for r in group})
    to_ports: dict[str, Any] = {"ports": [{"port": port, "protocol": p} for p, port in ports]}
    if any(r.kind is PeerKind.DNS for r in group):
        # Cilium learns name -> address mappings for toFQDNs only through its DNS proxy.
        to_ports["rules"] = {"dns": [{"matchPattern": "*"}]}
    return {**selector, "toPorts": [to_ports]}
