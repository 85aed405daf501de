"""Domain objects of the runtime service rendered as their protos: profiles with their items and
coverage, workloads, learning targets, alerts, rules and nodes. Called by the servicer only."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import alert_pb2, blind_spot_pb2, node_pb2, profile_pb2, workload_pb2
from parallax.type.v1 import workload_pb2 as ref_pb2

from services.runtime import domain, rules
from services.runtime.alerts import Alert
from services.runtime.containers import Process
from services.runtime.learning import Profile, WorkloadRecord
from services.runtime.nodes import Node
from services.runtime.profiles import WRITE_FLAGS, Category, Item, ItemKey, State

M = TypeVar("M", bound=Any)
STATES = {State.LEARNING: 1, State.COMPLETE: 2, State.PARTIAL: 3}


def stamp(moment: float | None) -> Timestamp | None:
    """Return a Timestamp for epoch seconds, or None when unset."""
    if not moment:
        return None
    whole = int(moment)
    return Timestamp(seconds=whole, nanos=int((moment - whole) * 1e9))


def duration(seconds: float) -> Duration:
    """Return a Duration for `seconds`."""
    whole = int(seconds)
    return Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def ref(workload: domain.Workload, container: str = "", pod: str = "") -> ref_pb2.WorkloadRef:
    """Return a WorkloadRef."""
    return ref_pb2.WorkloadRef(
        namespace=workload.namespace,
        kind=workload.kind,
        name=workload.name,
        pod=pod,
        container=container,
    )


def _enum(value: int) -> Any:
    # Generated enum fields are typed as NewType ints; our domain keeps plain ints.
    return value


def _order(entry: tuple[ItemKey, Item]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in entry[0])


def _sorted(items: dict[ItemKey, Item]) -> list[tuple[ItemKey, Item]]:
    return sorted(items.items(), key=_order)


def _seen(message: M, item: Item) -> M:
    if item.first_seen:
        message.first_seen_time.CopyFrom(stamp(item.first_seen))
    message.replicas_seen = len(item.pods)
    return message


def _file(key: ItemKey, item: Item) -> profile_pb2.ProfileFileOpen:
    message = profile_pb2.ProfileFileOpen(
        path_pattern=str(key[0]),
        open_flags=item.flags,
        writes=bool(item.flags & WRITE_FLAGS),
        errnos=sorted(item.errnos),
        executables=sorted(item.tags),
    )
    return _seen(message, item)


def _syscall(key: ItemKey, item: Item) -> profile_pb2.ProfileSyscall:
    message = profile_pb2.ProfileSyscall(
        syscall_name=item.label,
        syscall_number=int(key[1]),
        arch=_enum(int(key[0])),
        runtime_startup=bool(item.flags),
    )
    return _seen(message, item)


def _peer(key: ItemKey, item: Item) -> profile_pb2.ProfileNetworkPeer:
    message = profile_pb2.ProfileNetworkPeer(
        direction=_enum(int(key[0])),
        protocol=_enum(int(key[1])),
        address=str(key[2]),
        port=int(key[3]),
        dns_names=sorted(item.tags),
    )
    return _seen(message, item)


def _items(message: profile_pb2.Profile, profile: Profile) -> None:
    items = profile.items
    syscalls = [_syscall(k, i) for k, i in items[Category.SYSCALL].items()]
    message.syscalls.extend(sorted(syscalls, key=lambda s: (s.syscall_name, s.syscall_number)))
    message.executables.extend(
        _seen(
            profile_pb2.ProfileExecutable(
                path=str(k[0]), argv=[str(a) for a in k[1:]], parent_paths=sorted(i.tags)
            ),
            i,
        )
        for k, i in _sorted(items[Category.EXEC])
    )
    message.file_opens.extend(_file(k, i) for k, i in _sorted(items[Category.FILE]))
    message.failed_file_opens.extend(_file(k, i) for k, i in _sorted(items[Category.FAILED_FILE]))
    message.network_peers.extend(_peer(k, i) for k, i in _sorted(items[Category.PEER]))
    message.dns_names.extend(
        _seen(profile_pb2.ProfileDnsName(dns_name=str(k[0]), addresses=sorted(i.tags)), i)
        for k, i in _sorted(items[Category.DNS])
    )
    message.capabilities.extend(
        _seen(
            profile_pb2.ProfileCapability(
                capability_name=i.label,
                capability_number=int(k[0]),
                allowed_count=i.allowed,
                denied_count=i.denied,
                runtime_startup=bool(i.flags),
            ),
            i,
        )
        for k, i in _sorted(items[Category.CAPABILITY])
    )
    message.user_ids.extend(
        _seen(
            profile_pb2.ProfileUserId(uid=int(k[0]), euid=int(k[1]), executables=sorted(i.tags)), i
        )
        for k, i in _sorted(items[Category.USER])
    )


def profile(found: Profile, now: float, summary_only: bool = False) -> profile_pb2.Profile:
    """Return the profile message, with its items unless `summary_only`."""
    cover = found.coverage(now)
    message = profile_pb2.Profile(
        name=found.name,
        workload=ref(found.workload, found.container),
        image=found.image,
        image_digest=found.digest,
        current=found.current,
        state=_enum(STATES[found.state]),
        state_reason=found.reason,
        create_time=stamp(found.create_time),
        update_time=stamp(found.update_time),
        complete_time=stamp(found.complete_time),
        coverage=profile_pb2.Coverage(
            last_new_item_time=stamp(cover.last_new_item),
            learning_window=duration(cover.window),
            observed_duration=duration(cover.observed),
            replicas_observed=cover.replicas,
            start_observed=cover.start_observed,
            start_observed_reason=cover.start_reason,
            events_dropped=cover.events_dropped,
            unattributed_events=cover.unattributed,
            events_received=cover.events_received,
            watched_duration=duration(cover.watched),
            observation_gaps=cover.gaps,
        ),
    )
    if not summary_only:
        _items(message, found)
    return message


def workload(
    record: WorkloadRecord, profiles: list[Profile], window: float, open_alerts: int
) -> workload_pb2.Workload:
    """Return the workload message with a summary per container."""
    containers = [
        workload_pb2.ContainerSummary(
            container_name=p.container,
            image=p.image,
            image_digest=p.digest,
            profile=p.name,
            profile_state=_enum(STATES[p.state]),
        )
        for p in sorted(profiles, key=lambda p: p.container)
    ]
    return workload_pb2.Workload(
        name=f"workloads/{record.workload.path}",
        workload=ref(record.workload),
        containers=containers,
        learning_enabled=record.learning_enabled,
        learning_window=duration(record.window or window),
        pods_observed=len(record.pods),
        node_names=sorted(record.nodes)[:100],
        first_seen_time=stamp(record.first_seen),
        last_seen_time=stamp(record.last_seen),
        open_alert_count=open_alerts,
    )


def _tree(tree: tuple[Process, ...]) -> list[alert_pb2.Process]:
    return [
        alert_pb2.Process(
            pid=p.pid, ppid=p.ppid, path=p.path, argv=list(p.argv), uid=p.uid, euid=p.euid
        )
        for p in tree
    ]


def alert(found: Alert) -> alert_pb2.Alert:
    """Return the alert message: the first occurrence in its top-level fields, the latest in
    latest_occurrence, and the pods and nodes it occurred in."""
    origin, latest = found.origin, found.latest
    return alert_pb2.Alert(
        name=found.name,
        rule_id=found.rule_id,
        rule_title=found.title,
        severity=_enum(int(found.severity)),
        mitre_technique_id=found.technique,
        message=found.message,
        workload=ref(origin.workload, origin.container, origin.pod),
        pod_uid=origin.pod_uid,
        container_id=origin.container_id,
        image_digest=origin.image_digest,
        node_name=origin.node,
        process_tree=_tree(found.tree),
        evidence=found.evidence,
        count=found.count,
        first_seen_time=stamp(found.first_seen),
        last_seen_time=stamp(found.last_seen),
        state=_enum(int(found.state)),
        update_time=stamp(found.update_time),
        pod_names=list(found.pods),
        node_names=list(found.nodes),
        latest_occurrence=alert_pb2.AlertOccurrence(
            pod_name=latest.pod,
            pod_uid=latest.pod_uid,
            container_id=latest.container_id,
            image_digest=latest.image_digest,
            node_name=latest.node,
            process_tree=_tree(found.latest_tree),
        ),
    )


def rule(found: rules.Rule) -> alert_pb2.Rule:
    """Return the rule message."""
    return alert_pb2.Rule(
        name=f"rules/{found.rule_id}",
        rule_id=found.rule_id,
        title=found.title,
        description=found.description,
        severity=_enum(int(found.severity)),
        mitre_technique_id=found.technique,
        mitre_tactic=found.tactic,
        requires_complete_profile=found.requires_complete,
    )


def node(found: Node, now: float) -> node_pb2.Node:
    """Return the node message with its blind spots."""
    gaps = [
        blind_spot_pb2.EventGap(
            event_type=_enum(g.event_type),
            reason=_enum(g.reason),
            start_time=stamp(g.start),
            end_time=stamp(g.end),
            detail=g.detail,
        )
        for g in found.gaps
    ]
    return node_pb2.Node(
        name=f"nodes/{found.node}",
        node_name=found.node,
        agent_id=found.agent_id,
        agent_version=found.agent_version,
        kernel_release=found.kernel_release,
        arch=_enum(found.arch),
        session_id=found.session_id,
        state=_enum(1 if found.reporting(now) else 2),
        first_report_time=stamp(found.first_report),
        last_report_time=stamp(found.last_report),
        last_acknowledged_sequence=found.last_sequence,
        events_received=found.events_received,
        drop_counters=[
            blind_spot_pb2.DropCounter(event_type=_enum(t), source=_enum(s), dropped_total=v)
            for (t, s), v in sorted(found.drops().items())
        ],
        unattributed_counts=[
            node_pb2.NodeUnattributed(event_type=_enum(t), reason=_enum(r), count=v)
            for (t, r), v in sorted(found.unattributed.items())
        ],
        gaps=gaps,
    )


def target(
    record: WorkloadRecord, profiles: list[Profile], monitor: bool, window: float, node_name: str
) -> workload_pb2.LearningTarget:
    """Return what agents must record (or monitor, with the learned syscalls) for a workload."""
    cgroups = [
        workload_pb2.TargetCgroup(
            node_name=r.node,
            cgroup_id=r.cgroup_id,
            pod_uid=uid,
            container_id=r.container_id,
            container_name=p.container,
        )
        for p in profiles
        for uid, r in sorted(p.replicas.items())
        if not node_name or r.node == node_name
    ]
    monitored = [
        workload_pb2.MonitoredSyscalls(
            container_name=p.container, arch=_enum(arch), syscall_numbers=numbers
        )
        for p in sorted(profiles, key=lambda p: p.container)
        if monitor
        for arch, numbers in p.syscall_numbers().items()
    ]
    return workload_pb2.LearningTarget(
        name=f"learningTargets/{record.workload.path}",
        workload=ref(record.workload),
        mode=_enum(2 if monitor else 1),
        learning_window=duration(record.window or window),
        start_time=stamp(record.learning_start),
        cgroups=cgroups,
        monitored_syscalls=monitored,
    )
