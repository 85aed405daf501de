"""Attributed events as the attributor hands them to the shipper, in the order observed: Event
messages carry their own attribution; compact records (agent.compact) carry none, and `cgroups`
holds their cgroups' attributions, one per cgroup, so attributing them costs nothing per event.
Built by agent.attribution.attributor; batched by agent.ship; counted by agent.metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TypeAlias

from parallax.runtime.v1 import event_pb2 as pb

from agent.compact import CGROUP, TYPE, Compact, to_event

Reason: TypeAlias = pb.UnattributedReason.ValueType
Resolved: TypeAlias = pb.Attribution | Reason  # an attribution, or why there is none
Item: TypeAlias = Compact | pb.Event
_PAYLOAD_TYPES = {
    field.name: pb.EventType.Value(f"EVENT_TYPE_{field.name.upper()}")
    for field in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields
}


def event_type(event: pb.Event) -> pb.EventType.ValueType:
    """The EventType of an event's payload (EVENT_TYPE_UNSPECIFIED when it has none)."""
    return _PAYLOAD_TYPES.get(event.WhichOneof("payload") or "", pb.EVENT_TYPE_UNSPECIFIED)


def kind(item: Item) -> int:
    """The EventType of an event in either form."""
    return item[TYPE] if isinstance(item, tuple) else event_type(item)


def fill(attribution: pb.Attribution, found: Resolved) -> None:
    """Set `attribution` to `found`: a copy of it, or its unattributed reason."""
    if isinstance(found, pb.Attribution):
        attribution.CopyFrom(found)
    else:
        attribution.unattributed_reason = found


def attach(event: pb.Event, found: Resolved) -> pb.Event:
    """Give `event` an attribution or an unattributed reason; returns it."""
    fill(event.attribution, found)
    return event


def message(item: Item, cgroups: dict[int, Resolved]) -> pb.Event:
    """An event as an attributed Event message."""
    if isinstance(item, tuple):
        return attach(to_event(item), cgroups[item[CGROUP]])
    return item


class Attributed:
    """Events in order, and the attribution of every cgroup their compact records carry."""

    __slots__ = ("cgroups", "items")

    def __init__(
        self, items: Iterable[Item] = (), cgroups: dict[int, Resolved] | None = None
    ) -> None:
        self.items: list[Item] = list(items)
        self.cgroups: dict[int, Resolved] = {} if cgroups is None else cgroups

    def extend(self, other: Attributed) -> None:
        """Append `other`'s events. A compact record whose cgroup is attributed differently
        here (its attribution changed between the two) becomes an Event message with its own."""
        differ: dict[int, Resolved] = {}
        for cgroup, found in other.cgroups.items():
            mine = self.cgroups.setdefault(cgroup, found)
            if mine is not found and mine != found:
                differ[cgroup] = found
        if not differ:
            self.items.extend(other.items)
            return
        self.items.extend(
            message(i, differ) if isinstance(i, tuple) and i[CGROUP] in differ else i
            for i in other.items
        )

    def tally(self) -> Counter[tuple[int, int]]:
        """How many events there are per (EventType, unattributed reason; 0 when attributed)."""
        reasons = {c: r for c, r in self.cgroups.items() if not isinstance(r, pb.Attribution)}
        return Counter(
            (i[TYPE], reasons.get(i[CGROUP], 0))
            if isinstance(i, tuple)
            else (event_type(i), i.attribution.unattributed_reason)
            for i in self.items
        )

    def __len__(self) -> int:
        return len(self.items)


def attributed(events: Attributed | Iterable[pb.Event]) -> Attributed:
    """`events` as Attributed (Event messages carry their attribution themselves)."""
    return events if isinstance(events, Attributed) else Attributed(events)
