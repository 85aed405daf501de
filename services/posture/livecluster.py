"""Live-cluster input of a posture scan: lists the cluster through the `kubernetes` client and
turns the objects into manifests located at `cluster://<name>`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.posture import cluster, loader
from services.posture.domain import Manifest, ScanError, SourceLocation
from services.posture.scans import ClusterRequest


@dataclass(frozen=True)
class ClusterAccess:
    """How this process reaches clusters: a kubeconfig path (None for the default search) or
    the in-cluster service account."""

    kubeconfig: str | None
    in_cluster: bool

    def list(self, target: ClusterRequest) -> tuple[str, list[Manifest], list[ScanError]]:
        """List every scanned kind of the target cluster; listing failures become scan errors."""
        # The client reads KUBECONFIG once at import; read it at call time like kubectl does.
        kubeconfig = self.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        api = cluster.api_client_from(
            kubeconfig or None, target.context or None, target.in_cluster or self.in_cluster
        )
        with api:
            snapshot = cluster.list_cluster_objects(api, namespaces=target.namespaces)
        uri = f"cluster://{target.cluster_name or snapshot.cluster}"
        manifests, errors = loader.from_objects(snapshot.objects, uri)
        errors += [ScanError(SourceLocation(uri, 0, 0), message) for message in snapshot.errors]
        return uri, manifests, errors
