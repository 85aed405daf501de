"""Resolves a workload's observed network peers against the cluster's objects: a peer address
becomes backing pods (Service cluster IPs mapped to target ports, as NetworkPolicy matches after
DNAT), the DNS resolver pods, the API server, a host-network peer or an external address. Pure;
netpol_gen.py turns the result into policies and the servicer into wire flows."""

from __future__ import annotations

import ipaddress
from typing import Any

from services.policygen import dns
from services.policygen.cluster import Cluster, Pod, Service, stable_labels
from services.policygen.domain import NetworkPeer, Profile
from services.policygen.peers import Endpoint, PeerKind, Resolution, Resolved


def subject_endpoint(template: Pod) -> Endpoint:
    """Return the workload's pods as a flow endpoint."""
    return Endpoint("", template.namespace, dict(template.labels), False, template.ports)


def resolve(profiles: list[Profile], cluster: Cluster, template: Pod) -> Resolution:
    """Resolve every observed peer of `profiles` (the containers of one workload)."""
    result = Resolution(subject_endpoint(template))
    names = dns.side_table(profiles)
    for peer in sorted({p for profile in profiles for p in profile.network_peers}, key=_order):
        if _is_loopback(peer.address):
            result.note("LOOPBACK_SKIPPED", "loopback flows were observed; they need no rule")
        elif peer.direction == "accept":
            _ingress(result, cluster, peer)
        elif peer.port == dns.PORT:
            dns.add_resolver(result, cluster, peer)
        else:
            _egress(result, cluster, peer, names.get(peer.address, peer.dns_names))
    if any(p.dns_names for p in profiles) and not any(r.kind is PeerKind.DNS for r in result.peers):
        dns.add_cluster_resolver(result, cluster)
    return result


def _order(peer: NetworkPeer) -> tuple[Any, ...]:
    return (peer.direction, peer.address, peer.port, peer.protocol)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _ingress(result: Resolution, cluster: Cluster, peer: NetworkPeer) -> None:
    remote = address_endpoint(cluster, peer.address)
    kind = _kind(cluster, remote, peer.dns_names)
    if kind is PeerKind.HOST:
        result.note(
            "HOST_NETWORK_PEER",
            f"ingress from {peer.address} (host network or node); allowed by ipBlock",
        )
    result.peers.append(Resolved("ingress", kind, remote, peer.protocol, peer.port, peer.dns_names))


def _egress(
    result: Resolution, cluster: Cluster, peer: NetworkPeer, names: tuple[str, ...]
) -> None:
    service = cluster.service_at(peer.address)
    if service is not None and (service.namespace, service.name) == ("default", "kubernetes"):
        _api_server(result, cluster, peer)
        return
    if service is not None:
        _service_backends(result, cluster, service, peer)
        return
    if peer.address in cluster.endpoints.get(("default", "kubernetes"), ((), ()))[0]:
        remote = Endpoint(peer.address)
        result.peers.append(
            Resolved("egress", PeerKind.API_SERVER, remote, peer.protocol, peer.port)
        )
        result.note(
            "API_SERVER",
            f"egress to the API server at {peer.address}:{peer.port}; allowed by ipBlock",
        )
        return
    remote = address_endpoint(cluster, peer.address)
    kind = _kind(cluster, remote, names)
    if kind is PeerKind.HOST:
        result.note(
            "HOST_NETWORK_PEER",
            f"peer {peer.address}:{peer.port} is on the host network; allowed by ipBlock",
        )
    elif kind is PeerKind.EXTERNAL:
        result.note(
            "EXTERNAL_PEER",
            f"{peer.address} ({', '.join(names)}) is outside the cluster; allowed by a /32 ipBlock",
        )
    elif kind is PeerKind.UNRESOLVED:
        result.note(
            "UNRESOLVED_PEER",
            f"{peer.address} matched no pod, Service or DNS name; allowed by a /32 ipBlock",
        )
    result.peers.append(Resolved("egress", kind, remote, peer.protocol, peer.port, names))


def _api_server(result: Resolution, cluster: Cluster, peer: NetworkPeer) -> None:
    ips, ports = cluster.endpoints.get(("default", "kubernetes"), ((), ()))
    if not ips:
        result.note(
            "API_SERVER",
            "egress to the API server Service; its endpoints were not in the objects, so no rule "
            "was generated: add an ipBlock for them",
        )
        return
    for ip in ips:
        for port in ports or (peer.port,):
            result.peers.append(
                Resolved("egress", PeerKind.API_SERVER, Endpoint(ip), peer.protocol, port)
            )
    result.note(
        "API_SERVER",
        f"egress to the API server ({', '.join(ips)}); not selectable by labels, "
        "allowed by ipBlock",
    )


def _service_backends(
    result: Resolution, cluster: Cluster, service: Service, peer: NetworkPeer
) -> None:
    pods = cluster.backing_pods(service)
    port: int | str = peer.port
    for service_port in service.ports:
        if service_port.port == peer.port and service_port.protocol == peer.protocol:
            port = target_port(service_port.target, pods, peer.protocol)
    if not service.selector:
        result.note(
            "UNRESOLVED_PEER",
            f"Service {service.namespace}/{service.name} has no selector; "
            f"no rule generated for {peer.address}:{peer.port}",
        )
        return
    labels = stable_labels(service.selector)
    remote = Endpoint(peer.address, service.namespace, labels, False, pods[0].ports if pods else ())
    result.peers.append(
        Resolved("egress", PeerKind.POD, remote, peer.protocol, port, peer.dns_names)
    )


def target_port(target: int | str, pods: list[Pod], protocol: str) -> int | str:
    """Resolve a Service targetPort against its pods' container ports (a name stays a name
    when no pod declares it; NetworkPolicy accepts named ports)."""
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for pod in pods:
        for port in pod.ports:
            if port.name == target and port.protocol == protocol:
                return port.port
    return target


def address_endpoint(cluster: Cluster, address: str) -> Endpoint:
    """Return the endpoint at `address`: a pod with its stable labels, or a bare address."""
    pod = cluster.pod_at(address)
    if pod is None:
        return Endpoint(address, host_network=address in cluster.node_ips)
    if pod.host_network:
        return Endpoint(address, pod.namespace, None, True, pod.ports)
    return Endpoint(address, pod.namespace, stable_labels(pod.labels), False, pod.ports)


def _kind(cluster: Cluster, remote: Endpoint, names: tuple[str, ...]) -> PeerKind:
    if remote.labels is not None:
        return PeerKind.POD
    if remote.host_network:
        return PeerKind.HOST
    return PeerKind.EXTERNAL if names else PeerKind.UNRESOLVED
