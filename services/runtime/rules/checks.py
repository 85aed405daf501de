"""The pure checks behind the rule catalog: each turns one event, the container's profile and
its short-term state into detections, dispatched by payload type so that a check is only called
for events it can match. The engine aggregates detections into alerts."""

from __future__ import annotations

from collections.abc import Callable

from services.runtime import domain
from services.runtime.containers import ContainerState
from services.runtime.learning import Profile
from services.runtime.patterns import collapse_path
from services.runtime.profiles import Category, State
from services.runtime.rules.catalog import BY_ID, Detection
from services.runtime.signatures import (
    METADATA_NAMES,
    MINING_PORTS,
    TOKEN_DIRS,
    changes_packages,
    is_metadata_address,
    is_mining_pool,
    token_file,
)

Check = Callable[[domain.Event, Profile, ContainerState], list[Detection]]


def _hit(rule_id: str, key: str, message: str, **evidence: str) -> Detection:
    return Detection(BY_ID[rule_id], key, message, evidence)


def _where(event: domain.Event) -> str:
    origin = event.origin
    return f"{origin.workload.namespace}/{origin.workload.name} ({origin.container})"


def _complete(profile: Profile) -> bool:
    return profile.state is State.COMPLETE


def _init_process(event: domain.Event, box: ContainerState, profile: Profile) -> bool:
    """Whether the exec is the container's init process (its entrypoint): that process exec'ing
    again (an entrypoint script's `exec "$@"`: it still comes first in the table and its parent
    is outside the container), or the first process of a container whose start is being
    watched. An empty table is no evidence when the service restarted since the container
    started (its table was lost) or the agent says it missed the container's start."""
    processes = box.processes
    if processes:
        return event.ppid not in processes and next(iter(processes)) == event.pid
    replica = profile.replicas.get(event.origin.pod_uid)
    if replica is not None and replica.restored:
        return False
    return event.origin.start != domain.CGROUP_START_MISSED


def _shell_reason(
    event: domain.Event, exe: domain.Exec, profile: Profile, box: ContainerState
) -> str:
    """Why a shell exec is suspect (R0002), or "" when it is not: the container's init process,
    or a shell spawned by a parent the profile learned spawning it (its EXEC items' tags)."""
    if _init_process(event, box, profile):
        return ""
    if exe.stdin_tty:
        return "interactive: its stdin is a terminal"
    parent = box.parent_exe(event)
    if not parent:
        return "started from outside the container, as kubectl exec does"
    for key, item in profile.items[Category.EXEC].items():
        if key[0] == exe.path and any(_same_program(tag, parent) for tag in item.tags):
            return ""
    return f"spawned by {parent}, which the profile never saw spawn it"


def _same_program(learned: str, seen: str) -> bool:
    """Whether `seen` (an executable path, or only a comm: the process table knows a process
    that forked but was never seen exec'ing by its 15-character command name) is the program
    the profile learned as `learned`."""
    if learned == seen:
        return True
    return "/" not in seen and learned.rsplit("/", 1)[-1][:15] == seen[:15]


def check_exec(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0001, R0002, R0004, R0007, R0011 on a successful exec. The evidence is formatted only
    when a rule fires: most execs raise nothing."""
    exe = event.payload
    assert isinstance(exe, domain.Exec)
    if exe.return_value:
        return []
    path = exe.path
    unexpected = _complete(profile) and not any(k[0] == path for k in profile.items[Category.EXEC])
    shell = domain.is_shell(path)
    socket = shell and (exe.stdin_socket or exe.stdout_socket)
    reason = _shell_reason(event, exe, profile, box) if shell else ""
    drift = path in box.written
    packages = changes_packages(path, exe.argv) and not _init_process(event, box, profile)
    if not (unexpected or socket or reason or drift or packages):
        return []
    # The exec'd process's comm is already its new program's: no name for an unseen parent.
    parent = box.parent_exe(event) or f"pid {event.ppid} (not seen in the container)"
    args = " ".join(exe.argv)[:256]
    where = _where(event)
    found: list[Detection] = []
    if unexpected:
        message = f"unexpected {path} in {where}"
        found.append(_hit("R0001", path, message, path=path, argv=args, parent=parent))
    if socket:
        found.append(
            _hit(
                "R0007",
                path,
                f"{path} with socket stdio in {where}",
                path=path,
                argv=args,
                stdin_socket=str(exe.stdin_socket),
                stdout_socket=str(exe.stdout_socket),
            )
        )
    if reason:
        found.append(
            _hit(
                "R0002",
                f"{path}<{parent}",
                f"{path} in {where}: {reason}",
                path=path,
                argv=args,
                parent=parent,
                tty=str(exe.stdin_tty),
                reason=reason,
            )
        )
    if drift:
        message = f"{path} was written then executed in {where}"
        found.append(_hit("R0004", path, message, path=path, argv=args))
    if packages:
        message = f"package manager {path} changed packages in {where}"
        found.append(_hit("R0011", path, message, path=path, argv=args))
    return found


def check_open(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0003 on a successful open of a projected token (the service-account token, IRSA, workload
    identity) by an executable the profile never saw reading that token."""
    opened = event.payload
    assert isinstance(opened, domain.FileOpen)
    path = opened.path
    if opened.return_value < 0 or not path.startswith(TOKEN_DIRS) or not _complete(profile):
        return []
    token = token_file(collapse_path(path))  # the profile keeps path patterns
    if not token:
        return []
    exe = box.exe(event)
    for key, item in profile.items[Category.FILE].items():
        learned = str(key[0])
        if learned.startswith(TOKEN_DIRS) and exe in item.tags and token_file(learned) == token:
            return []
    return [
        _hit(
            "R0003",
            exe,
            f"{exe} read the token {path} in {_where(event)}",
            path=path,
            executable=exe,
        )
    ]


def check_flow(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0005, R0006 and R0008 on a network flow."""
    flow = event.payload
    assert isinstance(flow, domain.Flow)
    accepted = flow.direction == domain.ACCEPT  # the remote port is ephemeral, and 0
    remote = flow.remote_address if accepted else f"{flow.remote_address}:{flow.remote_port}"
    where = _where(event)
    found: list[Detection] = []
    if is_metadata_address(flow.remote_address):
        found.append(
            _hit(
                "R0005",
                flow.remote_address,
                f"{where} contacted the cloud metadata service at {remote}",
                remote_address=remote,
            )
        )
    if not accepted and flow.remote_port in MINING_PORTS:
        verb = "connected to" if flow.return_value >= 0 else "tried to connect to"
        found.append(
            _hit("R0006", remote, f"{where} {verb} mining port {remote}", remote_address=remote)
        )
    if not accepted and _complete(profile):
        names = box.dns.get(flow.remote_address, ())
        if not _known_peer(flow, names, profile):
            verb = "connected to" if flow.return_value >= 0 else "tried to connect to"
            found.append(
                _hit(
                    "R0008",
                    remote,
                    f"{where} {verb} unexpected peer {remote}",
                    remote_address=remote,
                    dns_names=",".join(names),
                    return_value=str(flow.return_value),
                )
            )
    return found


def _known_peer(flow: domain.Flow, names: tuple[str, ...], profile: Profile) -> bool:
    """Whether the profile learned this peer: its address, or one of the DNS names it resolved
    from (addresses behind a name change), with the same direction, protocol and port."""
    peers = profile.items[Category.PEER]
    if (flow.direction, flow.protocol, flow.remote_address, flow.remote_port) in peers:
        return True
    if not names:
        return False
    wanted = set(names)
    return any(
        key[0] == flow.direction
        and key[1] == flow.protocol
        and key[3] == flow.remote_port
        and not item.tags.isdisjoint(wanted)
        for key, item in peers.items()
    )


def check_dns(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0005 and R0006 on a DNS lookup."""
    query = event.payload
    assert isinstance(query, domain.Dns)
    where = _where(event)
    if query.name in METADATA_NAMES:
        return [_hit("R0005", query.name, f"{where} resolved {query.name}", dns_name=query.name)]
    if is_mining_pool(query.name):
        return [
            _hit(
                "R0006",
                query.name,
                f"{where} resolved mining pool {query.name}",
                dns_name=query.name,
            )
        ]
    return []


def check_capability(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0009 on a capability check by the workload (not the container runtime's set-up before
    the first exec, which every container start repeats)."""
    cap = event.payload
    assert isinstance(cap, domain.Capability)
    if cap.startup or not _complete(profile):
        return []
    if (cap.number,) in profile.items[Category.CAPABILITY]:
        return []
    return [
        _hit(
            "R0009",
            cap.name,
            f"{box.exe(event)} used {cap.name} in {_where(event)}",
            capability=cap.name,
            allowed=str(cap.allowed),
        )
    ]


def check_syscalls(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """R0010 on syscall sets after COMPLETE, and on monitor deviations and seccomp audit
    records after COMPLETE or PARTIAL: those come from a filter built from the learned set (a
    PARTIAL profile's for review), which is the baseline they deviate from, so they are never
    dropped unseen. The evidence says which state the profile was in."""
    payload = event.payload
    if isinstance(payload, domain.Deviation):
        if profile.state is State.LEARNING:
            return []
        pairs = [(payload.arch, payload.number, payload.name, payload.source)]
    elif not _complete(profile):
        return []
    else:
        assert isinstance(payload, domain.SyscallSet)
        pairs = [
            (payload.arch, n, name, "syscall_set")
            for n, name in zip(payload.numbers, payload.names, strict=True)
        ]
    known = profile.items[Category.SYSCALL]
    return [
        _hit(
            "R0010",
            f"{arch}:{number}",
            f"syscall {name or number} outside the learned set in {_where(event)}",
            syscall=name or str(number),
            number=str(number),
            source=source,
            profile_state=profile.state.name,
        )
        for arch, number, name, source in pairs
        if (arch, number) not in known
    ]


CHECKS: dict[type, Check] = {
    domain.Exec: check_exec,
    domain.FileOpen: check_open,
    domain.Flow: check_flow,
    domain.Dns: check_dns,
    domain.Capability: check_capability,
    domain.Deviation: check_syscalls,
    domain.SyscallSet: check_syscalls,
}


def evaluate(event: domain.Event, profile: Profile, box: ContainerState) -> list[Detection]:
    """Return the detections of `event` against the container's profile and state."""
    check = CHECKS.get(type(event.payload))
    return check(event, profile, box) if check else []
