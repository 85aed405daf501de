"""JSON encoding of the runtime service's domain objects for the store's rows (and the webhook
payloads its outbox holds), and back. Used by store.py only; no SQL here, so the row shapes can
be tested without a database."""

from __future__ import annotations

import json
from typing import Any

import orjson

from services.runtime import domain
from services.runtime.alerts import Alert, AlertState, to_json
from services.runtime.containers import Process
from services.runtime.learning import Profile, WorkloadRecord
from services.runtime.nodes import Counts, Node
from services.runtime.profiles import Category, Item, ItemKey, Replica, State


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def profile_row(profile: Profile) -> dict[str, Any]:
    """Return the profile's row (items are rows of their own)."""
    replicas = {
        uid: [r.pod, r.node, r.cgroup_id, r.container_id, r.start_observed, r.reason]
        for uid, r in profile.replicas.items()
    }
    data = {
        "workload": list(profile.workload),
        "container": profile.container,
        "image": profile.image,
        "digest": profile.digest,
        "current": profile.current,
        "state": profile.state.value,
        "reason": profile.reason,
        "times": [
            profile.create_time,
            profile.update_time,
            profile.last_new_item,
            profile.complete_time,
            profile.window,
        ],
        "counts": [profile.events_received, profile.events_dropped, profile.unattributed],
        "watch": [profile.watched, profile.mark, profile.gaps, profile.gap_detail],
        "replicas": replicas,
    }
    return {"name": profile.name, "workload": profile.workload.path, "data": _dumps(data)}


def profile(data: str) -> Profile:
    """Rebuild a profile (without items) from its row."""
    raw = json.loads(data)
    found = Profile(
        domain.Workload(*raw["workload"]), raw["container"], raw["image"], raw["digest"], 0.0
    )
    found.current, found.state, found.reason = raw["current"], State(raw["state"]), raw["reason"]
    (
        found.create_time,
        found.update_time,
        found.last_new_item,
        found.complete_time,
        found.window,
    ) = raw["times"]
    found.events_received, found.events_dropped, found.unattributed = raw["counts"]
    # Rows written before watched time was kept: watched from the last new item on.
    watch = raw.get("watch") or [0.0, found.last_new_item, 0, ""]
    found.watched, found.mark, found.gaps, found.gap_detail = watch
    for uid, (pod, node, cgroup, container_id, start, reason) in raw["replicas"].items():
        found.replicas[uid] = Replica.restore(
            pod,
            node,
            cgroup_id=cgroup,
            container_id=container_id,
            start_observed=start,
            reason=reason,
        )
    return found


def item_row(profile_name: str, category: Category, key: ItemKey, item: Item) -> dict[str, Any]:
    """Return one profile item's row."""
    data = [
        item.label,
        item.first_seen,
        sorted(item.pods),
        sorted(item.tags),
        sorted(item.errnos),
        item.flags,
        item.allowed,
        item.denied,
    ]
    return {
        "profile": profile_name,
        "category": category.value,
        "item_key": _dumps(list(key)),
        "data": _dumps(data),
    }


def attach_item(owner: Profile, category: str, key: str, data: str) -> None:
    """Put a stored item back into its profile."""
    label, first_seen, pods, tags, errnos, flags, allowed, denied = json.loads(data)
    item = Item(first_seen, label)
    item.pods, item.tags, item.errnos = set(pods), set(tags), set(errnos)
    item.flags, item.allowed, item.denied = flags, allowed, denied
    owner.items[Category(category)][tuple(json.loads(key))] = item


def workload_row(record: WorkloadRecord) -> dict[str, Any]:
    """Return a workload's row."""
    data = [
        list(record.workload),
        record.learning_enabled,
        record.window,
        record.learning_start,
        record.first_seen,
        record.last_seen,
        sorted(record.pods),
        sorted(record.nodes),
    ]
    return {"path": record.workload.path, "data": _dumps(data)}


def workload(data: str) -> WorkloadRecord:
    """Rebuild a workload record."""
    ref, enabled, window, start, first, last, pods, nodes = json.loads(data)
    return WorkloadRecord(
        domain.Workload(*ref), enabled, window, start, first, last, set(pods), set(nodes)
    )


def _counts(counts: Counts) -> list[list[int]]:
    return [[a, b, v] for (a, b), v in sorted(counts.items())]


def _uncounts(rows: list[list[int]]) -> Counts:
    return {(a, b): v for a, b, v in rows}


def node_row(node: Node) -> dict[str, Any]:
    """Return a node's row."""
    gaps = [[g.event_type, g.reason, g.start, g.end, g.detail] for g in node.gaps]
    data = [
        node.agent_id,
        node.agent_version,
        node.kernel_release,
        node.arch,
        node.session_id,
        node.first_report,
        node.last_report,
        node.last_sequence,
        node.events_received,
        _counts(node.retired_drops),
        _counts(node.session_drops),
        _counts(node.unattributed),
        gaps,
        {agent: [session, _counts(c)] for agent, (session, c) in node.other_sessions.items()},
    ]
    return {"node": node.node, "data": _dumps([node.node, *data])}


def node(data: str) -> Node:
    """Rebuild a node."""
    (
        name,
        agent_id,
        version,
        kernel,
        arch,
        session,
        first,
        last,
        sequence,
        received,
        retired,
        current,
        unattributed,
        gaps,
        *rest,  # agents' sessions apart: rows from before they were kept have none
    ) = json.loads(data)
    others = rest[0] if rest else {}
    return Node(
        name,
        agent_id,
        version,
        kernel,
        arch,
        session,
        first,
        last,
        sequence,
        received,
        _uncounts(retired),
        _uncounts(current),
        _uncounts(unattributed),
        [domain.Gap(*g) for g in gaps],
        {agent: (session, _uncounts(c)) for agent, (session, c) in others.items()},
    )


def _origin_row(origin: domain.Origin) -> list[Any]:
    return [list(origin.workload), *origin[1:]]


def _origin(raw: list[Any]) -> domain.Origin:
    workload, *rest = raw
    return domain.Origin(domain.Workload(*workload), *rest)


def _tree(raw: list[list[Any]]) -> tuple[Process, ...]:
    return tuple(
        Process(pid, ppid, path, tuple(argv), uid, euid) for pid, ppid, path, argv, uid, euid in raw
    )


def alert_row(alert: Alert) -> dict[str, Any]:
    """Return an alert's row."""
    data = [
        alert.id,
        alert.key,
        alert.rule_id,
        alert.title,
        int(alert.severity),
        alert.technique,
        alert.message,
        _origin_row(alert.origin),
        [list(p) for p in alert.tree],
        alert.evidence,
        alert.count,
        alert.first_seen,
        alert.last_seen,
        int(alert.state),
        alert.update_time,
        alert.state_reason,
        list(alert.pods),
        list(alert.nodes),
        _origin_row(alert.latest),
        [list(p) for p in alert.latest_tree],
    ]
    return {
        "id": alert.id,
        "rule_id": alert.rule_id,
        "state": int(alert.state),
        "last_seen": alert.last_seen,
        "data": _dumps(data),
    }


def alert(data: str) -> Alert:
    """Rebuild an alert. Rows written before alerts kept their pods, nodes and latest
    occurrence read as having occurred in their first pod only."""
    raw = json.loads(data)
    origin, tree = _origin(raw[7]), _tree(raw[8])
    if len(raw) > 16:
        pods, nodes = tuple(raw[16]), tuple(raw[17])
        latest, latest_tree = _origin(raw[18]), _tree(raw[19])
    else:
        pods, nodes, latest, latest_tree = (origin.pod,), (origin.node,), origin, tree
    return Alert(
        id=raw[0],
        key=raw[1],
        rule_id=raw[2],
        title=raw[3],
        severity=domain.Severity(raw[4]),
        technique=raw[5],
        message=raw[6],
        origin=origin,
        tree=tree,
        latest=latest,
        latest_tree=latest_tree,
        pods=pods,
        nodes=nodes,
        evidence=raw[9],
        count=raw[10],
        first_seen=raw[11],
        last_seen=raw[12],
        state=AlertState(raw[13]),
        update_time=raw[14],
        state_reason=raw[15],
    )


def outbox_row(alert: Alert) -> dict[str, Any]:
    """Return the webhook outbox row of a new alert: its JSON payload as of now."""
    return {
        "alert_id": alert.id,
        "enqueue_time": alert.update_time,
        "payload": _dumps(to_json(alert)),
    }
