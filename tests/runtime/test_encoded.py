"""Event messages read where they lie in the request's encoding: the spans are exactly the
encoded events, the times are read in place for the usual layout and refused otherwise, and a
batch reads the same whatever the encoder's layout (times out of order, unknown fields, a
group): an unusual layout costs speed only."""

from __future__ import annotations

import random

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from parallax.runtime.v1 import event_pb2
from parallax.runtime.v1 import runtime_service_pb2 as pb

from servicekit.errors import InvalidArgument
from services.runtime import encoded, wire
from tests.packing import packed
from tests.runtime import builders as b
from tests.runtime.test_records import NOW, mixed, shape


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    """One field's encoding (tag, then the length for length-delimited payloads)."""
    tag = varint(number << 3 | wire_type)
    return tag + (varint(len(payload)) + payload if wire_type == 2 else payload)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_spans_are_the_events_encodings_wherever_they_lie() -> None:
    for request in (b.batch(1, mixed()), packed(b.batch(1, mixed()))):
        raw = request.SerializeToString()
        # other fields after and between the events, as another encoder may write them
        raw = field(7, 2, b"v2") + raw + field(5, 0, varint(9)) + field(10, 2, b"")
        spans = encoded.spans(raw)
        assert spans is not None
        events = [*request.events, event_pb2.Event()]
        assert [raw[s:e] for s, e in zip(spans[::2], spans[1::2], strict=True)] == [
            e.SerializeToString() for e in events
        ]


def test_spans_refuse_groups_and_every_truncation_without_raising() -> None:
    raw = b.batch(1, mixed()).SerializeToString()
    assert encoded.spans(raw + b"\x9b\x06\x9c\x06") is None  # field 99 as a group
    ends = set(encoded.spans(raw) or [])
    for cut in range(len(raw)):
        found = encoded.spans(raw[:cut])
        assert found is None or cut in ends or found == []
    rng = random.Random(5)
    for _ in range(500):
        encoded.spans(rng.randbytes(rng.randrange(1, 64)))  # never raises


@pytest.mark.parametrize("seconds", [0, 1_700_000_000, -5, (1 << 63) - 1])
def test_head_reads_the_times_in_place(seconds: int) -> None:
    event = b.wire_open("/etc/app.conf")
    event.monotonic_ns = 123_456_789
    event.event_time.CopyFrom(Timestamp(seconds=seconds, nanos=999_999_999))
    raw = b"xx" + event.SerializeToString()
    at, found_seconds, nanos = encoded.head(raw, 2, len(raw))
    rest = event_pb2.Event()
    rest.CopyFrom(event)
    rest.ClearField("monotonic_ns")
    rest.ClearField("event_time")
    assert (found_seconds, nanos) == (seconds, 999_999_999)
    assert raw[at:] == rest.SerializeToString()


def test_head_refuses_times_laid_out_otherwise() -> None:
    rest = b.wire_open("/etc/app.conf")
    rest.ClearField("event_time")
    body = rest.SerializeToString()
    time = field(1, 0, varint(1_700_000_000)) + field(2, 0, varint(5))
    unknown = field(2, 2, time + field(9, 0, varint(1)))
    assert encoded.head(unknown + body, 0, len(unknown + body))[0] == -1
    # event_time first, then monotonic_ns: the times are read, the monotonic stays in the key
    swapped = field(2, 2, time) + field(1, 0, varint(77)) + body
    at, seconds, nanos = encoded.head(swapped, 0, len(swapped))
    assert (seconds, nanos) == (1_700_000_000, 5) and swapped[at:] == field(1, 0, varint(77)) + body
    assert encoded.head(b"\x08\xff", 0, 2)[0] == -1  # a varint running past the end
    assert encoded.head(b"", 0, 0) == (0, 0, 0)


def layouts(request: pb.ReportEventsRequest) -> dict[str, bytes]:
    """The same request encoded as other encoders may: times after the payload, a Timestamp
    with an unknown field, and an unknown group at the end."""
    header = pb.ReportEventsRequest()
    header.CopyFrom(request)
    header.ClearField("events")
    head = header.SerializeToString()
    late, unknown = [], []
    for event in request.events:
        rest = event_pb2.Event()
        rest.CopyFrom(event)
        rest.ClearField("event_time")
        time = event.event_time.SerializeToString()
        late.append(field(10, 2, rest.SerializeToString() + field(2, 2, time)))
        odd = field(2, 2, time + field(15, 0, varint(1)))
        unknown.append(field(10, 2, odd + rest.SerializeToString()))
    canonical = request.SerializeToString()
    return {
        "times-last": head + b"".join(late),
        "unknown-in-timestamp": head + b"".join(unknown),
        "group": canonical + b"\x9b\x06\x08\x01\x9c\x06",
    }


def test_a_batch_reads_the_same_whatever_the_layout() -> None:
    events = mixed() + mixed()  # repeats, at the same times
    request = b.batch(1, events)
    expected = shape(wire.batch(request, NOW))
    for name, raw in layouts(request).items():
        decoded = pb.ReportEventsRequest.FromString(raw)
        known = pb.ReportEventsRequest()
        known.CopyFrom(decoded)
        known.DiscardUnknownFields()
        assert list(known.events) == list(request.events), name
        plans = wire.Plans()
        assert shape(wire.batch(decoded, NOW, plans, raw)) == expected, name
        assert shape(wire.batch(decoded, NOW, plans, raw)) == expected, name  # from the plans


def test_a_repeat_with_an_absurd_time_is_still_refused() -> None:
    first = b.wire_open("/etc/app.conf", at=b.T0)
    again = b.wire_open("/etc/app.conf", at=b.T0)
    again.event_time.seconds = 5
    with pytest.raises(InvalidArgument, match=r"events\[1\].event_time"):
        wire.batch(b.batch(1, [first, again]), NOW)
