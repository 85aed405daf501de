"""DNS wire-format parsing for the messages dns.c copies (port 53 over UDP and TCP, at most
4096 bytes each): the question's name and type, and for answers the rcode, A/AAAA addresses and
CNAME chain. Called by agent.decode. A message cut short (the kernel counts those as DNS drops)
or malformed yields what could be read before the cut: the addresses of the records that are
whole, never an address built from part of one.
"""

from __future__ import annotations

import ipaddress
import struct

from parallax.runtime.v1 import event_pb2 as pb

TYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
}
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
MAX_ADDRESSES = 32


class _Malformed(Exception):
    pass


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """The (possibly compressed) name at `pos` and the position after it in the record."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounds compression loops
        if pos >= len(data):
            raise _Malformed
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise _Malformed
            end = pos + 2 if end < 0 else end
            pos = ((length & 0x3F) << 8) | data[pos + 1]
        elif length == 0:
            return ".".join(labels).lower(), (pos + 1 if end < 0 else end)
        else:
            labels.append(data[pos + 1 : pos + 1 + length].decode(errors="replace"))
            pos += 1 + length
    raise _Malformed


def fill(query: pb.DnsQuery, data: bytes, is_query: bool) -> None:
    """Fill `query` from one DNS message; queries get rcode -1 (no answer seen)."""
    query.rcode = -1
    if len(data) < _HEADER.size:
        return
    _id, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data)
    pos = _HEADER.size
    try:
        if qdcount:
            query.query_name, pos = _name(data, pos)
            qtype = struct.unpack_from("!H", data, pos)[0]
            query.query_type = TYPES.get(qtype, str(qtype))
            pos += 4
        if is_query or not flags & 0x8000:
            return
        query.rcode = flags & 0xF
        _answers(query, data, pos, ancount)
    except (_Malformed, struct.error, ValueError):
        return


def _answers(query: pb.DnsQuery, data: bytes, pos: int, count: int) -> None:
    for _ in range(count):
        _owner, pos = _name(data, pos)
        rtype, _cls, _ttl, rdlength = _RR.unpack_from(data, pos)
        pos += _RR.size
        if pos + rdlength > len(data):
            raise _Malformed  # the message was cut inside this record
        rdata = data[pos : pos + rdlength]
        if rtype == 1 and rdlength == 4 and len(query.answer_addresses) < MAX_ADDRESSES:
            query.answer_addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == 28 and rdlength == 16 and len(query.answer_addresses) < MAX_ADDRESSES:
            query.answer_addresses.append(str(ipaddress.IPv6Address(rdata)))
        elif rtype == 5:
            query.cname_names.append(_name(data, pos)[0])
        pos += rdlength
