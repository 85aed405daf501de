"""Secret and data-access controls SEC-01..SEC-04: literal credentials, secret env vars, mounts.

Registered on `REGISTRY` and run by `rules.evaluate` per container, pod spec or ConfigMap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from services.posture.domain import Manifest, Severity
from services.posture.rules.engine import PARTIAL, USED, Context, Hit, Meta, Registry, Scope
from services.posture.workload import ContainerView, PodView, as_list, as_map, as_str

REGISTRY = Registry("Secrets")
SENSITIVE_NAME = re.compile(
    r"secret|passw|pwd|token|jwt|bearer|credential|private_?key|api_?key|access_?key", re.I
)
SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\bghp_[A-Za-z0-9]{36}\b"
    r"|\bAIza[0-9A-Za-z_-]{35}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}|\beyJhbGciO[A-Za-z0-9_-]{10,}"
)

_VALUE_MARKERS = ("PRIVATE KEY", "AKIA", "ghp_", "AIza", "xox", "eyJhbGciO")


def looks_secret(name: str, value: Any) -> bool:
    """A literal that is a credential by its name (and is not a path) or by its shape."""
    if not isinstance(value, str) or not value.strip():
        return False
    if any(marker in value for marker in _VALUE_MARKERS) and SECRET_VALUE.search(value):
        return True
    return bool(SENSITIVE_NAME.search(name)) and not value.startswith(("/", "$("))


@REGISTRY.container(
    Meta(
        "SEC-01", "Credentials in env vars or ConfigMaps", Severity.HIGH,
        ks=("C-0012", "C-0259"), fw="AB CS MITRE NSA SEC SOC2 WS",
        unmapped="Checkov leaves credential detection to its separate secrets framework.",
        runtime=(PARTIAL, "outbound authentication to the credential's service shows it is "
                 "live; /proc/<pid>/environ reads by other processes show exposure."),
        fix="Move the value into a Secret and reference it (or mount it as a file).",
    )
)  # fmt: skip
def literal_credentials(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Credentials written into the manifest leak through Git, `kubectl get` and every reader."""
    for index, entry in enumerate(as_list(c.body.get("env"))):
        env = as_map(entry)
        name = as_str(env.get("name"))
        if looks_secret(name, env.get("value")):
            path = (*c.path, "env", index, "value")
            yield Hit(path, f"container {c.name!r} env {name!r} holds a literal credential")


@REGISTRY.also("SEC-01", Scope.OBJECT, kinds=("ConfigMap",))
def configmap_credentials(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """ConfigMaps are not protected like Secrets; credentials in them are readable by many."""
    for key, value in as_map(manifest.body.get("data")).items():
        if isinstance(key, str) and looks_secret(key, value):
            yield Hit(("data", key), f"ConfigMap key {key!r} holds a literal credential")


@REGISTRY.container(
    Meta(
        "SEC-02", "Secrets injected as env vars", Severity.MEDIUM,
        ks=("C-0207",), ckv=("CKV_K8S_35",), fw="WS", cis=("5.4.1",),
        runtime=(PARTIAL, "child processes inheriting the environment and /proc/<pid>/environ "
                 "reads widen exposure."),
        fix="Mount the Secret as a volume and read it from a file.",
    )
)  # fmt: skip
def secret_env(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Secrets in env vars leak into child processes, crash dumps and logs."""
    for index, entry in enumerate(as_list(c.body.get("env"))):
        reference = as_map(as_map(as_map(entry).get("valueFrom")).get("secretKeyRef"))
        if reference:
            path = (*c.path, "env", index, "valueFrom", "secretKeyRef")
            secret = as_str(reference.get("name"))
            yield Hit(path, f"container {c.name!r} reads Secret {secret!r} into an env var")
    for index, entry in enumerate(as_list(c.body.get("envFrom"))):
        reference = as_map(as_map(entry).get("secretRef"))
        if reference:
            path = (*c.path, "envFrom", index, "secretRef")
            secret = as_str(reference.get("name"))
            yield Hit(path, f"container {c.name!r} loads Secret {secret!r} as env vars")


def _mounted_volumes(pod: PodView) -> set[str]:
    return {
        as_str(as_map(mount).get("name"))
        for c in pod.containers
        for mount in as_list(c.body.get("volumeMounts"))
    }


def _volumes_of(pod: PodView, key: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    mounted = _mounted_volumes(pod)
    for index, volume in pod.volumes():
        source = volume.get(key)
        if isinstance(source, Mapping) and as_str(volume.get("name")) in mounted:
            yield index, source


@REGISTRY.pod(
    Meta(
        "SEC-03", "Secret volume mounted", Severity.HIGH,
        ks=("C-0255",), fw="SEC",
        unmapped="Checkov has no secret-volume inventory check.",
        runtime=(USED, "file opens under the secret mountPath: never read means removable, "
                 "read by a shell or curl is suspicious."),
        fix="Mount only the Secrets the container reads, with items limited to the needed keys.",
    )
)  # fmt: skip
def secret_volume(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A mounted Secret is one file read away from an intruder in the container."""
    for index, source in _volumes_of(pod, "secret"):
        name = as_str(source.get("secretName"))
        yield Hit(pod.at("volumes", index, "secret"), f"mounts Secret {name!r}")


@REGISTRY.pod(
    Meta(
        "SEC-04", "ConfigMap or PVC mounted (data-access inventory)", Severity.MEDIUM,
        ks=("C-0258", "C-0257"), fw="SEC WS",
        unmapped="Checkov has no data-access inventory check.",
        runtime=(USED, "read/write activity under the mount path; writes into a "
                 "ConfigMap-backed path signal tampering attempts."),
        fix="Mount only the volumes the container uses, read-only where possible.",
    )
)  # fmt: skip
def data_volume(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Mounted ConfigMaps and claims are data an intruder can read or alter from the pod."""
    for key, attribute in (("configMap", "name"), ("persistentVolumeClaim", "claimName")):
        for index, source in _volumes_of(pod, key):
            name = as_str(source.get(attribute))
            yield Hit(pod.at("volumes", index, key), f"mounts {key} {name!r}")
