"""Volume mounts of a workload manifest: which volume (hostPath, Secret, emptyDir, ...) each
container mounts where, and whether writable. Verdicts need mount paths to tell hostPath,
Secret and root-filesystem activity apart in a profile. Pure; called by the correlation pass."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.correlator.domain import Finding, Mount

_POD_SPEC = {"Pod": ("spec",), "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}
_SOURCES = ("hostPath", "secret", "configMap", "emptyDir", "persistentVolumeClaim", "projected")
_VOLUME_INDEX = re.compile(r"volumes\[(\d+)\]")
_CONTAINER = re.compile(r"container '([^']+)'")


def pod_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the pod spec of a workload manifest, or {} when it has none."""
    node: Any = manifest
    for step in _POD_SPEC.get(str(manifest.get("kind")), ("spec", "template", "spec")):
        node = node.get(step) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def mounts(manifest: Mapping[str, Any]) -> tuple[Mount, ...]:
    """Every (container, volume mount) of the manifest with its volume's source."""
    spec = pod_spec(manifest)
    volumes: dict[str, tuple[int, str, str]] = {}
    for index, volume in enumerate(_list(spec.get("volumes"))):
        source = next((k for k in _SOURCES if isinstance(volume.get(k), Mapping)), "other")
        host = str(volume.get("hostPath", {}).get("path", "")) if source == "hostPath" else ""
        volumes[str(volume.get("name", ""))] = (index, source, host)
    found = []
    for key in ("containers", "initContainers"):
        for container in _list(spec.get(key)):
            for mount in _list(container.get("volumeMounts")):
                index, source, host = volumes.get(str(mount.get("name", "")), (-1, "other", ""))
                found.append(
                    Mount(
                        container=str(container.get("name", "")),
                        volume=str(mount.get("name", "")),
                        source=source,
                        path=str(mount.get("mountPath", "")),
                        read_only=mount.get("readOnly") is True,
                        host_path=host,
                        index=index,
                    )
                )
    return tuple(found)


def container_of(finding: Finding) -> str:
    """The container a finding names ("container 'x' ..."), or "" for pod-level findings."""
    if finding.detail("container"):
        return finding.detail("container")
    match = _CONTAINER.search(finding.message)
    return match.group(1) if match else ""


def finding_mounts(finding: Finding, known: tuple[Mount, ...]) -> tuple[Mount, ...]:
    """The mounts a volume finding is about: by posture's mount_path detail, else by the volume
    index in its field path, else (POD-06 names the mount) by the container's hostPath mounts."""
    if finding.detail("mount_path"):
        path = finding.detail("mount_path")
        return tuple(m for m in known if m.path == path) or (
            Mount(container_of(finding), "", finding.detail("source"), path, False),
        )
    match = _VOLUME_INDEX.search(finding.field_path)
    if match:
        return tuple(m for m in known if m.index == int(match.group(1)))
    container = container_of(finding)
    return tuple(
        m for m in known if m.source == "hostPath" and (not container or m.container == container)
    )


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
