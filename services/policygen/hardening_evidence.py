"""The evidence rules of hardening.py: which securityContext change each container's profile
justifies, and why a change is skipped (uid 0 seen, a setuid transition, the token read, writes
that an emptyDir cannot absorb). Absence of behaviour only counts as evidence in a COMPLETE
profile; hardening.py's readiness says so."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.policygen.cluster import Workload
from services.policygen.domain import Profile, evidence_summary

if TYPE_CHECKING:
    from services.policygen.hardening import Hardening

TOKEN_DIRS = (
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/run/secrets/kubernetes.io/serviceaccount",
)
# Paths the kubelet and runtime mount over the root filesystem: writes there are not rootfs writes.
NOT_ROOTFS = (
    "/proc",
    "/sys",
    "/dev",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/secrets",
    "/var/run/secrets",
)
# Directories an emptyDir can take over without hiding files the image ships.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run", "/var/cache", "/var/log", "/home")


@dataclass(frozen=True)
class Container:
    """One container: its manifest entry (if known) and its profile (if any)."""

    name: str
    profile: Profile | None
    mounts: tuple[str, ...]


def containers(profiles: list[Profile], manifest: Workload | None) -> list[Container]:
    """Return the containers in manifest order (profile order without a manifest)."""
    by_name = {p.workload.container: p for p in profiles}
    if manifest is None:
        return [Container(p.workload.container, p, ()) for p in profiles]
    spec = _pod_spec(manifest)
    return [
        Container(
            c.get("name", ""),
            by_name.get(c.get("name", "")),
            tuple(m.get("mountPath", "") for m in c.get("volumeMounts") or ()),
        )
        for c in spec.get("containers") or ()
    ]


def _pod_spec(manifest: Workload) -> dict[str, Any]:
    spec = dict(manifest.spec)
    if manifest.kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    if manifest.kind == "Pod":
        return spec
    return dict((spec.get("template") or {}).get("spec") or {})


def container_changes(
    result: Hardening, index: int, container: Container, seccomp_path: str, count: int
) -> None:
    """Add the changes one container's profile justifies."""
    base = ("containers", index, "securityContext")
    profile = container.profile
    if profile is None:
        result.skip(base, f"no runtime profile for container {container.name}")
        return
    seen = evidence_summary([profile])
    _capabilities(result, (*base, "capabilities"), profile, seen)
    _read_only_root(result, index, container, profile, seen)
    _non_root(result, base, profile, seen)
    setuid = sorted({e for u in profile.user_ids if u.uid != u.euid for e in u.executables})
    if any(u.uid != u.euid for u in profile.user_ids):
        result.skip(
            (*base, "allowPrivilegeEscalation"),
            f"setuid transition observed ({', '.join(setuid) or 'unknown executable'})",
        )
    else:
        result.set(
            (*base, "allowPrivilegeEscalation"),
            False,
            f"no setuid transition in {seen}",
            ("CTR-02",),
        )
    if seccomp_path and count == 1:
        value = {"type": "Localhost", "localhostProfile": seccomp_path}
        result.set((*base, "seccompProfile"), value, f"profile generated from {seen}", ("CTR-10",))
    elif seccomp_path:
        result.skip(
            (*base, "seccompProfile"),
            "several containers: generate and point at one profile per container",
        )


def _capabilities(result: Hardening, path: tuple[Any, ...], profile: Profile, seen: str) -> None:
    used = sorted(
        {
            c.name.removeprefix("CAP_")
            for c in profile.capabilities
            if c.allowed and not c.runtime_startup  # the runtime's set-up is not the workload
        }
    )
    setup = sorted({c.name.removeprefix("CAP_") for c in profile.capabilities if c.runtime_startup})
    why = f"capabilities used: {', '.join(used) or 'none'} in {seen}"
    if setup:
        why += f" ({', '.join(setup)} only by the container runtime before the first exec)"
    result.set((*path, "drop"), ["ALL"], why, ("CTR-07", "CTR-08"))
    if used:
        result.set((*path, "add"), used, "checked and granted by the kernel", ("CTR-06",))


def _read_only_root(
    result: Hardening, index: int, container: Container, profile: Profile, seen: str
) -> None:
    path = ("containers", index, "securityContext", "readOnlyRootFilesystem")
    mounted = (*NOT_ROOTFS, *container.mounts)
    written = sorted(
        {_directory(f.path) for f in profile.file_opens if f.writes and not _under(f.path, mounted)}
    )
    blocked = [d for d in written if not _under(d, SCRATCH_DIRS)]
    if blocked:
        result.skip(
            path, f"writes to {', '.join(blocked)}: an emptyDir there would hide the image's files"
        )
        return
    dirs = [d for d in written if not any(d != o and _under(d, (o,)) for o in written)]
    why = f"no write to the root filesystem in {seen}"
    if dirs:
        why = f"root filesystem writes only under {', '.join(dirs)} (emptyDir mounted) in {seen}"
    result.set(path, True, why, ("CTR-03",))
    for number, directory in enumerate(dirs):
        volume = f"parallax-{container.name}-{number}"[:63]
        mount = {"name": volume, "mountPath": directory}
        result.set(
            ("containers", index, "volumeMounts", number), mount, f"{directory} is written", ()
        )
        at = sum(1 for c in result.changes if ".volumes[" in c.field_path)
        scratch = {"name": volume, "emptyDir": {}}
        result.set(("volumes", at), scratch, f"scratch space for {directory}", ())


def _non_root(result: Hardening, base: tuple[Any, ...], profile: Profile, seen: str) -> None:
    path = (*base, "runAsNonRoot")
    if not profile.user_ids:
        result.skip(path, "no process identity observed")
        return
    root = sorted({e for u in profile.user_ids if 0 in (u.uid, u.euid) for e in u.executables})
    if any(0 in (u.uid, u.euid) for u in profile.user_ids):
        result.skip(path, f"uid 0 observed for {', '.join(root) or 'an unknown executable'}")
        return
    uids = sorted({u.uid for u in profile.user_ids})
    result.set(path, True, f"no process ran as uid 0 in {seen}", ("CTR-04",))
    if len(uids) == 1:
        # kubelet can only check runAsNonRoot for a numeric uid; the observed one is known.
        result.set((*base, "runAsUser"), uids[0], "the only uid observed", ("CTR-05",))


def pod_changes(result: Hardening, profiles: list[Profile], manifest: Workload | None) -> None:
    """Add the pod-level changes: the service account token."""
    readers = sorted(
        {
            e
            for p in profiles
            for f in p.file_opens
            if _under(f.path, TOKEN_DIRS)
            for e in f.executables
        }
    )
    path = ("automountServiceAccountToken",)
    if any(_under(f.path, TOKEN_DIRS) for p in profiles for f in p.file_opens):
        result.skip(
            path,
            f"the service account token was read ({', '.join(readers) or 'unknown executable'})",
        )
    elif profiles:
        result.set(path, False, f"token never read in {evidence_summary(profiles)}", ("SA-01",))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _directory(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = next((i for i, part in enumerate(parts) if "*" in part), len(parts) - 1)
    return posixpath.normpath("/".join(parts[:fixed]) or "/")
