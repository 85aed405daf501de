"""Effective values of a pod spec, computed once per workload and shared by every control.

`rules.evaluate` builds one PodView per workload manifest; checks read the view instead of
re-walking the body. Typed accessors here return empty values on wrong types, so checks stay
defensive against hostile input. The semantics are documented in the README (Posture scanning).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from services.posture.domain import Manifest

T = TypeVar("T")
Path = tuple[str | int, ...]

_TEMPLATE: Path = ("spec", "template", "spec")
POD_SPEC_PATHS: Mapping[str, Path] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Deployment": _TEMPLATE,
    "ReplicaSet": _TEMPLATE,
    "DaemonSet": _TEMPLATE,
    "StatefulSet": _TEMPLATE,
    "Job": _TEMPLATE,
    "ReplicationController": _TEMPLATE,
    "DeploymentConfig": _TEMPLATE,
}
CONTAINER_GROUPS = ("containers", "initContainers", "ephemeralContainers")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_APPARMOR_VALUES = {"runtime/default": "RuntimeDefault", "unconfined": "Unconfined"}
_EMPTY: Mapping[str, Any] = {}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def as_map(value: Any) -> Mapping[str, Any]:
    """`value` if it is a mapping, else an empty one."""
    if isinstance(value, dict):  # the common case, much cheaper than the ABC check
        return value
    return value if isinstance(value, Mapping) else _EMPTY


def as_list(value: Any) -> Sequence[Any]:
    """`value` if it is a list, else an empty one."""
    return value if isinstance(value, list) else ()


def as_str(value: Any) -> str:
    """`value` if it is a string, else ""."""
    return value if isinstance(value, str) else ""


def as_bool(value: Any) -> bool | None:
    """`value` if it is a real boolean, else None (unset)."""
    return value if isinstance(value, bool) else None


def as_int(value: Any) -> int | None:
    """`value` if it is an integer (not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def dig(body: Any, path: Path) -> Any:
    """The value at `path`, or None if any step is missing or of the wrong type."""
    current = body
    for step in path:
        if isinstance(step, int):
            if not isinstance(current, list) or not 0 <= step < len(current):
                return None
            current = current[step]
        else:
            if not isinstance(current, Mapping):
                return None
            current = current.get(step)
    return current


def render_path(path: Path) -> str:
    """`("spec", "containers", 0, "image")` as `spec.containers[0].image`; keys that are not
    plain words (annotation names) render as `['key']`."""
    out: list[str] = []
    for step in path:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _PLAIN_KEY.fullmatch(step):
            out.append(f".{step}" if out else step)
        else:
            out.append(f"[{step!r}]")
    return "".join(out)


def string_list(value: Any) -> tuple[str, ...]:
    """The string entries of a list; other entries and non-lists are dropped."""
    return tuple(item for item in as_list(value) if isinstance(item, str))


@dataclass(frozen=True)
class Field(Generic[T]):
    """An effective value and the path that supplied it (or where to set it when unset)."""

    value: T | None
    path: Path
    from_pod: bool = False


@dataclass(frozen=True)
class ContainerView:
    """One container of a pod spec with its effective security settings."""

    group: str
    index: int
    path: Path
    name: str
    body: Mapping[str, Any]
    security_context: Mapping[str, Any]
    run_as_user: Field[int]
    run_as_group: Field[int]
    run_as_non_root: Field[bool]
    se_linux_options: Field[Mapping[str, Any]]
    seccomp_type: Field[str]
    apparmor_type: Field[str]
    host_process: Field[bool]
    caps_add: tuple[str, ...]
    caps_drop: tuple[str, ...]
    image: str

    def sc_path(self, *rest: str | int) -> Path:
        """Path of a field under this container's securityContext."""
        return (*self.path, "securityContext", *rest)

    def sc_bool(self, key: str) -> bool | None:
        """A boolean of the container's own securityContext (not inherited)."""
        return as_bool(self.security_context.get(key))


@dataclass(frozen=True)
class PodView:
    """A workload's pod spec with inherited and defaulted values resolved."""

    manifest: Manifest
    path: Path
    spec: Mapping[str, Any]
    security_context: Mapping[str, Any]
    labels: Mapping[str, str]
    labels_path: Path
    annotations: Mapping[str, Any]
    namespace: str
    service_account: str
    automount: Field[bool]
    automount_source: str
    containers: tuple[ContainerView, ...]

    def at(self, *rest: str | int) -> Path:
        """Path of a field under this pod spec."""
        return (*self.path, *rest)

    def bool_field(self, key: str) -> bool | None:
        return as_bool(self.spec.get(key))

    def group(self, *groups: str) -> tuple[ContainerView, ...]:
        """The containers of the named groups (containers, initContainers, ...)."""
        return tuple(c for c in self.containers if c.group in groups)

    def volumes(self) -> tuple[tuple[int, Mapping[str, Any]], ...]:
        """(index, volume) for every well-formed entry of `volumes`."""
        return tuple(
            (i, v)
            for i, v in enumerate(as_list(self.spec.get("volumes")))
            if isinstance(v, Mapping)
        )


ServiceAccounts = Mapping[tuple[str, str], Mapping[str, Any]]


def effective_namespace(manifest: Manifest) -> str:
    """The namespace an object lands in when applied without `-n`: its own, else default."""
    return manifest.namespace or "default"


def pod_view(manifest: Manifest, service_accounts: ServiceAccounts) -> PodView | None:
    """The PodView of a workload manifest, or None for kinds without a pod spec."""
    path = POD_SPEC_PATHS.get(manifest.kind)
    if path is None:
        return None
    spec = as_map(dig(manifest.body, path))
    meta_path: Path = ("metadata",) if manifest.kind == "Pod" else (*path[:-1], "metadata")
    meta = as_map(dig(manifest.body, meta_path))
    pod_sc = as_map(spec.get("securityContext"))
    annotations = as_map(meta.get("annotations"))
    namespace = effective_namespace(manifest)
    account = as_str(spec.get("serviceAccountName")) or as_str(spec.get("serviceAccount"))
    account = account or "default"
    automount, source = _automount(spec, path, service_accounts.get((namespace, account)))
    containers = tuple(
        _container_view(
            path, group=group, index=index, body=body, pod_sc=pod_sc, annotations=annotations
        )
        for group in CONTAINER_GROUPS
        for index, body in enumerate(as_list(spec.get(group)))
        if isinstance(body, Mapping)
    )
    labels = {k: v for k, v in as_map(meta.get("labels")).items() if isinstance(v, str)}
    return PodView(
        manifest=manifest,
        path=path,
        spec=spec,
        security_context=pod_sc,
        labels=labels,
        labels_path=(*meta_path, "labels"),
        annotations=annotations,
        namespace=namespace,
        service_account=account,
        automount=automount,
        automount_source=source,
        containers=containers,
    )


def _automount(
    spec: Mapping[str, Any], path: Path, account: Mapping[str, Any] | None
) -> tuple[Field[bool], str]:
    """Pod value wins; else the ServiceAccount's; else Kubernetes' default of true."""
    field_path = (*path, "automountServiceAccountToken")
    own = as_bool(spec.get("automountServiceAccountToken"))
    if own is not None:
        return Field(own, field_path, True), "pod spec"
    from_account = as_bool(as_map(account).get("automountServiceAccountToken"))
    if from_account is not None:
        return Field(from_account, field_path, False), "ServiceAccount"
    source = "default (ServiceAccount sets nothing)" if account else "default (no ServiceAccount)"
    return Field(True, field_path, False), source


def _container_view(
    pod_path: Path,
    *,
    group: str,
    index: int,
    body: Mapping[str, Any],
    pod_sc: Mapping[str, Any],
    annotations: Mapping[str, Any],
) -> ContainerView:
    path: Path = (*pod_path, group, index)
    sc = as_map(body.get("securityContext"))
    caps = as_map(sc.get("capabilities"))
    name = as_str(body.get("name"))

    def inherit(key: str, *sub: str) -> Field[Any]:
        return _inherit(sc, pod_sc, path, pod_path, (key, *sub))

    return ContainerView(
        group=group,
        index=index,
        path=path,
        name=name,
        body=body,
        security_context=sc,
        run_as_user=_typed(inherit("runAsUser"), as_int),
        run_as_group=_typed(inherit("runAsGroup"), as_int),
        run_as_non_root=_typed(inherit("runAsNonRoot"), as_bool),
        se_linux_options=_typed(inherit("seLinuxOptions"), _non_empty_map),
        seccomp_type=_typed(inherit("seccompProfile", "type"), _non_empty_str),
        apparmor_type=_apparmor(
            sc, pod_sc, path, pod_path, annotations.get(APPARMOR_ANNOTATION + name)
        ),
        host_process=_typed(inherit("windowsOptions", "hostProcess"), as_bool),
        caps_add=_capabilities(caps.get("add")),
        caps_drop=_capabilities(caps.get("drop")),
        image=as_str(body.get("image")),
    )


def _inherit(
    sc: Mapping[str, Any], pod_sc: Mapping[str, Any], path: Path, pod_path: Path, key: Path
) -> Field[Any]:
    """Container securityContext overrides the pod's for the same key."""
    own = dig(sc, key)
    if own is not None:
        return Field(own, (*path, "securityContext", *key))
    inherited = dig(pod_sc, key)
    if inherited is not None:
        return Field(inherited, (*pod_path, "securityContext", *key), True)
    return Field(None, (*path, "securityContext", *key))


def _typed(field: Field[Any], accessor: Any) -> Field[Any]:
    return Field(accessor(field.value), field.path, field.from_pod)


def _non_empty_map(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) and value else None


def _non_empty_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _apparmor(
    sc: Mapping[str, Any],
    pod_sc: Mapping[str, Any],
    path: Path,
    pod_path: Path,
    annotation: Any,
) -> Field[str]:
    """appArmorProfile (1.30+) wins over the legacy per-container annotation, then the pod."""
    own = _non_empty_str(dig(sc, ("appArmorProfile", "type")))
    if own:
        return Field(own, (*path, "securityContext", "appArmorProfile", "type"))
    legacy = as_str(annotation)
    if legacy:
        value = _APPARMOR_VALUES.get(
            legacy, "Localhost" if legacy.startswith("localhost/") else legacy
        )
        return Field(value, (*path, "securityContext", "appArmorProfile", "type"), True)
    pod = _non_empty_str(dig(pod_sc, ("appArmorProfile", "type")))
    if pod:
        return Field(pod, (*pod_path, "securityContext", "appArmorProfile", "type"), True)
    return Field(None, (*path, "securityContext", "appArmorProfile", "type"))


def _capabilities(value: Any) -> tuple[str, ...]:
    """Capability names upper-cased with any CAP_ prefix removed."""
    names = (name.strip().upper() for name in string_list(value))
    return tuple(name[4:] if name.startswith("CAP_") else name for name in names)
