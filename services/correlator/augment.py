"""Behaviour seen after a profile became COMPLETE, folded into a copy of the frozen profile so
policygen's successor policy allows it: syscalls (R0010, seccomp audit), outbound peers (R0008),
capabilities (R0009) and executables (R0001) from the alerts' evidence. The loop sends the copy
inline; the runtime profile itself is never changed."""

from __future__ import annotations

from collections.abc import Iterable

from parallax.runtime.v1 import alert_pb2, event_pb2, profile_pb2
from parallax.type.v1 import platform_pb2


def _syscall(copy: profile_pb2.Profile, evidence: dict[str, str]) -> None:
    number = int(evidence.get("number") or -1)
    if number < 0 or any(s.syscall_number == number for s in copy.syscalls):
        return
    arch = copy.syscalls[0].arch if copy.syscalls else platform_pb2.ARCHITECTURE_X86_64
    name = evidence.get("syscall", "")
    copy.syscalls.add(syscall_name="" if name.isdigit() else name, syscall_number=number, arch=arch)


def _peer(copy: profile_pb2.Profile, evidence: dict[str, str]) -> None:
    address, _, port = evidence.get("remote_address", "").rpartition(":")
    if not address or not port.isdigit():
        return
    copy.network_peers.add(
        direction=event_pb2.FLOW_DIRECTION_CONNECT,
        protocol=platform_pb2.PROTOCOL_TCP,
        address=address.strip("[]"),
        port=int(port),
        replicas_seen=1,
    )


def _capability(copy: profile_pb2.Profile, evidence: dict[str, str]) -> None:
    name = evidence.get("capability", "")
    if name and not any(c.capability_name == name for c in copy.capabilities):
        copy.capabilities.add(capability_name=name, allowed_count=1, replicas_seen=1)


def _executable(copy: profile_pb2.Profile, evidence: dict[str, str]) -> None:
    path = evidence.get("path", "")
    if path and not any(e.path == path for e in copy.executables):
        copy.executables.add(path=path, argv=[path], replicas_seen=1)


_FOLD = {"R0010": _syscall, "R0008": _peer, "R0009": _capability, "R0001": _executable}


def with_alerts(
    profile: profile_pb2.Profile, alerts: Iterable[alert_pb2.Alert]
) -> profile_pb2.Profile:
    """A copy of `profile` that also holds the behaviour of the container's open alerts."""
    copy = profile_pb2.Profile()
    copy.CopyFrom(profile)
    for alert in alerts:
        fold = _FOLD.get(alert.rule_id)
        same = alert.workload.container == profile.workload.container
        if fold and same and alert.state != alert_pb2.ALERT_STATE_RESOLVED:
            fold(copy, dict(alert.evidence))
    copy.syscalls.sort(key=lambda s: s.syscall_name or str(s.syscall_number))
    return copy
