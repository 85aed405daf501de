"""Runtime evidence checks per posture control: each looks at one container profile (and the
container's mounts) and returns the observed facts that show the finding's privilege or resource
in use. Raising Unjudgeable means a static fact is missing (a mount path). Pure; verdicts.py
turns the facts into EXERCISED, NOT_EXERCISED or NO_EVIDENCE."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from services.correlator.domain import Evidence, Finding, Mount, Profile
from services.correlator.mounts import finding_mounts

# The capabilities containerd and Docker grant by default: using them proves nothing privileged.
DEFAULT_CAPABILITIES = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})  # fmt: skip
TOKEN_DIRS = (
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "/run/secrets/kubernetes.io/serviceaccount/",
)
PSEUDO_FS = ("/proc/", "/sys/", "/dev/")
# Files the kubelet bind-mounts into every container; writes there are not rootfs writes.
KUBELET_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log")
NODE_LOCAL_PORTS = frozenset({10250, 10255, 2379, 2380})
METADATA = "169.254.169.254"
RUNTIME_CLIENTS = ("docker", "crictl", "ctr", "nerdctl", "podman")
HOST_PID_SYSCALLS = frozenset({"ptrace", "process_vm_readv", "process_vm_writev", "setns"})
_HOST_PROC = re.compile(r"^/proc/(1|\*)/(environ|root|cwd|mem|ns|maps)")
_ADDED = re.compile(r"(?:adds capability|adds) (?:CAP_)?([A-Z_]+)")

Check = Callable[[Finding, Profile, tuple[Mount, ...]], list[Evidence]]


class Unjudgeable(Exception):
    """A static fact the check needs is missing; the message says which."""


def _cap(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def capabilities_used(profile: Profile, wanted: Callable[[str], bool]) -> list[Evidence]:
    """Capabilities the kernel allowed for the container, filtered by name."""
    return [
        Evidence(f"{c.name} allowed {c.allowed} times", profile.name, c.first_seen)
        for c in profile.capabilities
        if c.allowed > 0 and wanted(c.name)
    ]


def privileged(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """A privileged (or SYS_ADMIN) container exercising capabilities beyond the default set."""
    return capabilities_used(profile, lambda name: name not in DEFAULT_CAPABILITIES)


def added_capability(
    finding: Finding, profile: Profile, mounts: tuple[Mount, ...]
) -> list[Evidence]:
    """The added capability the finding names, allowed by the kernel."""
    named = finding.detail("capability") or next(iter(_ADDED.findall(finding.message)), "")
    if not named:
        raise Unjudgeable("the finding does not name the added capability")
    return capabilities_used(profile, lambda name: name == _cap(named))


def net_raw(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Raw sockets: CAP_NET_RAW allowed."""
    return capabilities_used(profile, lambda name: name == "CAP_NET_RAW")


def privilege_escalation(
    finding: Finding, profile: Profile, mounts: tuple[Mount, ...]
) -> list[Evidence]:
    """A setuid exec or an effective-uid change (euid differs from uid)."""
    return [
        Evidence(
            f"uid {u.uid} ran with euid {u.euid} ({', '.join(u.executables) or '?'})",
            profile.name,
            u.first_seen,
        )
        for u in profile.user_ids
        if u.euid != u.uid
    ]


def runs_as_root(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """uid or euid 0 seen on the container's processes."""
    return [
        Evidence(
            f"uid {u.uid}/euid {u.euid} for {', '.join(u.executables) or '?'}",
            profile.name,
            u.first_seen,
        )
        for u in profile.user_ids
        if 0 in (u.uid, u.euid)
    ]


def _under(pattern: str, directory: str) -> bool:
    base = directory.rstrip("/")
    return bool(base) and (pattern == base or pattern.startswith(base + "/"))


def _opens(profile: Profile, paths: Iterable[str], writes_only: bool) -> list[Evidence]:
    roots = [p for p in paths if p]
    return [
        Evidence(
            f"{f.pattern} {'written' if f.writes else 'opened'} by "
            f"{', '.join(f.executables) or '?'}",
            profile.name,
            f.first_seen,
        )
        for f in profile.file_opens
        if any(_under(f.pattern, r) for r in roots) and (f.writes or not writes_only)
    ]


def rootfs_writes(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Writes to paths of the container's root filesystem (not volumes, not pseudo files)."""
    volumes = [m.path for m in mounts if m.container == profile.container]
    return [
        Evidence(
            f"{f.pattern} written by {', '.join(f.executables) or '?'} (root filesystem)",
            profile.name,
            f.first_seen,
        )
        for f in profile.file_opens
        if f.writes
        and not f.pattern.startswith(PSEUDO_FS)
        and f.pattern not in KUBELET_FILES
        and not f.pattern.startswith(TOKEN_DIRS)
        and not any(_under(f.pattern, v) for v in volumes)
    ]


def _mount_paths(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[str]:
    chosen = [m for m in finding_mounts(finding, mounts) if m.container in ("", profile.container)]
    if not finding_mounts(finding, mounts):
        raise Unjudgeable("mount path unknown: the workload manifest is not available")
    return [m.path for m in chosen]


def volume_access(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Any open under the mount path of the finding's volume (hostPath, Secret)."""
    return _opens(profile, _mount_paths(finding, profile, mounts), writes_only=False)


def volume_writes(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Writes under the mount path of the finding's hostPath volume."""
    return _opens(profile, _mount_paths(finding, profile, mounts), writes_only=True)


def runtime_socket(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Opens of the mounted runtime socket, or a container-runtime client run."""
    found = volume_access(finding, profile, mounts)
    found += [
        Evidence(f"runtime client {e.path} ran", profile.name, e.first_seen)
        for e in profile.executables
        if e.path.rsplit("/", 1)[-1] in RUNTIME_CLIENTS
    ]
    return found


def token_read(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """The service-account token file opened, and by which executable."""
    return [
        Evidence(
            f"service-account token read by {', '.join(f.executables) or '?'}",
            profile.name,
            f.first_seen,
        )
        for f in profile.file_opens
        if f.pattern.startswith(TOKEN_DIRS) and "token" in f.pattern
    ]


def host_network(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Node-local services (kubelet, etcd, metadata) contacted, or inbound flows accepted."""
    return [
        Evidence(
            f"{'inbound on port' if p.inbound else 'connected to'} "
            f"{p.port if p.inbound else f'{p.address}:{p.port}'}",
            profile.name,
            p.first_seen,
        )
        for p in profile.peers
        if p.inbound or p.port in NODE_LOCAL_PORTS or p.address == METADATA
    ]


def host_pid(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """Other processes' /proc entries read, nsenter run, or cross-process syscalls used."""
    found = [
        Evidence(f"{f.pattern} opened by {', '.join(f.executables) or '?'}", profile.name)
        for f in profile.file_opens
        if _HOST_PROC.match(f.pattern)
    ]
    found += [
        Evidence(f"{e.path} ran", profile.name, e.first_seen)
        for e in profile.executables
        if e.path.endswith("/nsenter")
    ]
    return found + [
        Evidence(f"syscall {s} used", profile.name)
        for s in profile.syscalls
        if s in HOST_PID_SYSCALLS
    ]


def network_flows(finding: Finding, profile: Profile, mounts: tuple[Mount, ...]) -> list[Evidence]:
    """The flows a NetworkPolicy for the workload must allow."""
    return [
        Evidence(
            f"{'inbound' if p.inbound else 'outbound'} {p.address}:{p.port}"
            + (f" ({', '.join(p.dns_names)})" if p.dns_names else ""),
            profile.name,
            p.first_seen,
        )
        for p in profile.peers
    ]
