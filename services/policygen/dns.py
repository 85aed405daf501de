"""DNS for generated NetworkPolicies: the DNS side table behind ipBlock peers, and egress to
the resolver the workload really uses, found from the cluster's objects (the kube-dns Service's
selector, then the labels of the pods it selects, since CoreDNS pods are often labelled unlike
the Service), NodeLocal DNS (169.254.20.10) or a cloud resolver."""

from __future__ import annotations

from services.policygen.cluster import Cluster, Service, stable_labels
from services.policygen.domain import NetworkPeer, Profile
from services.policygen.peers import Endpoint, PeerKind, Resolution, Resolved

PORT = 53
NODELOCAL = "169.254.20.10"
CLOUD_RESOLVERS = {"169.254.169.254": "the cloud metadata resolver", "168.63.129.16": "Azure DNS"}
_SERVICE_NAMES = ("kube-dns", "coredns", "rke2-coredns-rke2-coredns")


def side_table(profiles: list[Profile]) -> dict[str, tuple[str, ...]]:
    """Return address -> the DNS names that resolved to it, names sorted."""
    table: dict[str, set[str]] = {}
    for profile in profiles:
        for name, addresses in profile.dns_names.items():
            for address in addresses:
                table.setdefault(address, set()).add(name)
        for peer in profile.network_peers:
            table.setdefault(peer.address, set()).update(peer.dns_names)
    return {address: tuple(sorted(names)) for address, names in table.items() if names}


def cluster_dns_service(cluster: Cluster) -> Service | None:
    """Return the cluster's DNS Service (kube-system/kube-dns or a known alias)."""
    for name in _SERVICE_NAMES:
        for service in cluster.services:
            if (service.namespace, service.name) == ("kube-system", name):
                return service
    return None


def add_resolver(result: Resolution, cluster: Cluster, peer: NetworkPeer) -> None:
    """Allow DNS to the resolver at `peer.address`."""
    service = cluster_dns_service(cluster)
    resolver_pod = cluster.pod_at(peer.address)
    if peer.address == NODELOCAL:
        _by_address(result, peer.address, "NodeLocal DNS cache")
    elif peer.address in CLOUD_RESOLVERS:
        _by_address(result, peer.address, CLOUD_RESOLVERS[peer.address])
    elif service is not None and (
        peer.address in service.cluster_ips
        or (resolver_pod is not None and resolver_pod in cluster.backing_pods(service))
    ):
        add_cluster_resolver(result, cluster)
    else:
        _by_address(result, peer.address, "a resolver outside the cluster DNS")


def add_cluster_resolver(result: Resolution, cluster: Cluster) -> None:
    """Allow DNS (UDP and TCP 53, TCP for truncated answers) to the cluster's resolver pods."""
    service = cluster_dns_service(cluster)
    if service is None:
        result.note(
            "DNS_RESOLVER",
            "no kube-system/kube-dns Service in the objects; DNS allowed to every pod of "
            "kube-system on port 53",
        )
        _append(result, Endpoint("", "kube-system", {}), PORT)
        return
    pods = [p for p in cluster.backing_pods(service) if p.ip or not cluster.pods]
    labels = _common_labels([p.labels for p in pods]) or stable_labels(service.selector)
    names = _dns_port_names(service)
    ports = {port.port for pod in pods for port in pod.ports if port.name in names}
    source = f"the {len(pods)} pods the Service selects" if pods else "the Service's selector"
    result.note(
        "DNS_RESOLVER",
        f"DNS allowed to the resolver pods of kube-system/{service.name} "
        f"({', '.join(f'{k}={v}' for k, v in labels.items())}), labels from {source}",
    )
    address = service.cluster_ips[0] if service.cluster_ips else ""
    for port in sorted(ports) or [PORT]:
        _append(result, Endpoint(address, "kube-system", labels), port)


def _dns_port_names(service: Service) -> set[str]:
    return {str(p.target) for p in service.ports if p.port == PORT} | {"dns", "dns-tcp"}


def _common_labels(label_sets: list[object]) -> dict[str, str]:
    sets = [stable_labels(labels) for labels in label_sets if isinstance(labels, dict)]
    if not sets:
        return {}
    common = set(sets[0].items()).intersection(*(set(s.items()) for s in sets[1:]))
    return dict(sorted(common))


def _by_address(result: Resolution, address: str, what: str) -> None:
    result.note("DNS_RESOLVER", f"DNS allowed to {what} at {address} by ipBlock")
    _append(result, Endpoint(address), PORT, PeerKind.DNS)


def _append(result: Resolution, remote: Endpoint, port: int, kind: PeerKind = PeerKind.DNS) -> None:
    for protocol in ("UDP", "TCP"):
        resolved = Resolved("egress", kind, remote, protocol, port)
        if resolved not in result.peers:
            result.peers.append(resolved)
