"""Reading of a ReportEventsRequest's Event messages where they lie in its encoding: each one's
span and its leading times. A batch keys its Event messages by their bytes with the times cut
off, so a repeat (most DNS queries, every exec of the same command line) costs a slice and a
dictionary lookup, with no message object built for it.

Only the layout every protobuf encoder writes for these fields is read in place: anything else
(times out of field order, a Timestamp with unknown fields) makes the caller fall back to the
decoded message, so an unusual encoder costs speed, never a wrong reading. Pure; compiled with
mypyc (scripts/native.py)."""

from __future__ import annotations

_EVENTS = 10 << 3 | 2  # ReportEventsRequest.events: field 10, length-delimited
_MONOTONIC = 1 << 3  # Event.monotonic_ns: field 1, varint
_TIME = 2 << 3 | 2  # Event.event_time: field 2, length-delimited
_SECONDS, _NANOS = 1 << 3, 2 << 3  # Timestamp.seconds and .nanos: fields 1 and 2, varints
_SIGN, _WRAP = 1 << 63, 1 << 64


def spans(raw: bytes) -> list[int] | None:
    """Return where each `events` element of the ReportEventsRequest encoded in `raw` starts
    and ends, flat ([start0, end0, start1, end1, ...]), or None when `raw` holds a field this
    reader does not walk (a group) or ends inside a field."""
    found: list[int] = []
    at, size = 0, len(raw)
    while at < size:
        tag, at = _varint(raw, at)
        if at < 0:
            return None
        if tag == _EVENTS:
            length, start = _varint(raw, at)
            found.append(start)
            found.append(start + length)
        at = _skip(raw, at, tag & 7)
        if at < 0:
            return None
    return found if at == size else None


def head(raw: bytes, start: int, end: int) -> tuple[int, int, int]:
    """Return where the Event encoded in raw[start:end] goes on after its times (monotonic_ns
    and event_time, when they lead in that order), and event_time's seconds and nanos; a
    negative position when event_time is laid out otherwise (elsewhere, twice, with unknown
    fields) or the encoding ends inside a field."""
    at = start
    if at < end and raw[at] == _MONOTONIC:
        _, at = _varint(raw, at + 1)
        if at < 0:
            return -1, 0, 0
    seconds = nanos = 0
    if at < end and raw[at] == _TIME:
        if at + 1 >= end or raw[at + 1] > 127:
            return -1, 0, 0
        stop = at + 2 + raw[at + 1]
        at += 2
        if at < stop and raw[at] == _SECONDS:
            seconds, at = _varint(raw, at + 1)
        if at < stop and raw[at] == _NANOS:
            nanos, at = _varint(raw, at + 1)
        if at != stop:
            return -1, 0, 0
    cut = at
    while 0 <= at < end:  # the rest must not set event_time again
        tag, at = _varint(raw, at)
        if tag >> 3 == _TIME >> 3 or at < 0:
            return -1, 0, 0
        at = _skip(raw, at, tag & 7)
    if at != end:
        return -1, 0, 0
    return cut, _signed(seconds), _signed(nanos)


def _skip(raw: bytes, at: int, wire: int) -> int:
    """Return where a field of wire type `wire` whose payload starts at raw[at] ends; -1 for a
    group (not walked) or a payload running past the end."""
    if wire == 0:
        _, at = _varint(raw, at)
    elif wire == 2:
        length, at = _varint(raw, at)
        at = at + length if at >= 0 else -1
    elif wire == 1:
        at += 8
    elif wire == 5:
        at += 4
    else:
        return -1
    return at if at <= len(raw) else -1


def _signed(value: int) -> int:
    return value - _WRAP if value >= _SIGN else value


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    """Return the varint at raw[at] and where it ends; position -1 when `raw` ends first."""
    value = shift = 0
    size = len(raw)
    while at < size:
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            return 0, -1
    return 0, -1
