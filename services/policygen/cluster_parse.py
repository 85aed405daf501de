"""Reads Kubernetes manifests (YAML or JSON, lists included) into a `cluster.Cluster`. Pure:
callers hand in the bytes of each file; unknown kinds are ignored."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from servicekit.errors import InvalidArgument
from services.policygen.cluster import (
    WORKLOAD_KINDS,
    Cluster,
    ContainerPort,
    Pod,
    Service,
    ServicePort,
    Workload,
)


def load(files: Iterable[tuple[str, bytes]]) -> Cluster:
    """Read every object of every file; InvalidArgument names a file that is not YAML."""
    cluster = Cluster()
    for uri, content in files:
        try:
            documents = list(yaml.safe_load_all(content))
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"{uri}: not YAML or JSON: {exc}") from None
        for document in documents:
            for item in _items(document):
                add(cluster, item)
    return cluster


def _items(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    if str(document.get("kind", "")).endswith("List") and isinstance(document.get("items"), list):
        return [i for i in document["items"] if isinstance(i, dict)]
    return [document]


def add(cluster: Cluster, obj: dict[str, Any]) -> None:
    """Add one object to `cluster`."""
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name", "")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "Pod":
        cluster.pods.append(_pod(namespace, name, meta, spec, status.get("podIP", "")))
    elif kind in WORKLOAD_KINDS:
        template = _template(kind, spec)
        pod = _pod(namespace, name, template.get("metadata") or {}, template.get("spec") or {}, "")
        cluster.workloads.append(Workload(kind, namespace, name, pod, spec))
    elif kind == "Service":
        cluster.services.append(_service(namespace, name, spec))
    elif kind == "Namespace":
        cluster.namespaces[name] = dict(meta.get("labels") or {})
    elif kind == "Node":
        addresses = status.get("addresses") or []
        cluster.node_ips.update(a.get("address", "") for a in addresses if a.get("address"))
    elif kind == "Endpoints":
        ips, ports = [], []
        for subset in obj.get("subsets") or []:
            ips += [a.get("ip", "") for a in subset.get("addresses") or []]
            ports += [int(p.get("port", 0)) for p in subset.get("ports") or []]
        cluster.endpoints[(namespace, name)] = (tuple(ips), tuple(ports))
    elif kind == "NetworkPolicy":
        cluster.network_policies.append(obj)
    elif kind == "ServiceAccount":
        cluster.service_accounts[(namespace, name)] = obj


def _template(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    return template if isinstance(template, dict) else {}


def _pod(namespace: str, name: str, meta: dict[str, Any], spec: dict[str, Any], ip: str) -> Pod:
    ports = tuple(
        ContainerPort(p.get("name", ""), int(p.get("containerPort", 0)), p.get("protocol", "TCP"))
        for container in spec.get("containers") or []
        for p in container.get("ports") or []
    )
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return Pod(namespace, name, labels, ip, bool(spec.get("hostNetwork")), ports)


def _service(namespace: str, name: str, spec: dict[str, Any]) -> Service:
    ips = [spec.get("clusterIP", ""), *(spec.get("clusterIPs") or [])]
    ports = tuple(
        ServicePort(
            int(p.get("port", 0)), p.get("targetPort", p.get("port", 0)), p.get("protocol", "TCP")
        )
        for p in spec.get("ports") or []
    )
    unique = tuple(dict.fromkeys(i for i in ips if i and i != "None"))
    selector = {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}
    return Service(namespace, name, selector, unique, ports)
