"""Struct member offsets of the running kernel, read from its BTF (/sys/kernel/btf/vmlinux).

The probes are compiled against mismatched Debian headers, so they never dereference kernel
structs by type: the loader asks this module for byte offsets and passes them as -D defines.
The BTF format is a header, a type section and a string section; only what offsets need is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
CACHE_DIR = Path("/run/parallax/btf")
_MAGIC = 0xEB9F
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM = 1, 2, 3, 4, 5, 6
_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG = 8, 9, 10, 11, 18
_QUALIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}
# Bytes that follow the 12-byte common type record, fixed and per vlen entry, by kind.
_EXTRA_FIXED = {_INT: 4, _ARRAY: 12, 14: 4, 17: 4}
_EXTRA_PER_MEMBER = {_STRUCT: 12, _UNION: 12, _ENUM: 8, 13: 8, 15: 12, 19: 12}


class BtfError(Exception):
    """The kernel's BTF is missing, malformed, or lacks a requested struct member."""


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    ref: int  # referenced type id for qualifiers, pointers and arrays
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset)


class Btf:
    """The parsed type section of one BTF blob; `offset()` resolves dotted member paths."""

    def __init__(self, blob: bytes) -> None:
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != _MAGIC:
            raise BtfError("not a BTF blob (bad magic); is /sys/kernel/btf/vmlinux readable?")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._types: list[_Type] = [_Type(0, "void", 0, ())]
        self._by_name: dict[str, int] = {}
        self._parse(blob[hdr_len + type_off : hdr_len + type_off + type_len])

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self, section: bytes) -> None:
        pos = 0
        while pos < len(section):
            name_off, info, size_or_type = struct.unpack_from("<III", section, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[tuple[str, int, int], ...] = ()
            ref = size_or_type
            if kind in (_STRUCT, _UNION):
                raw = struct.iter_unpack("<III", section[pos : pos + 12 * vlen])
                members = tuple(
                    (self._str(m), t, (off & 0xFFFFFF) if kflag else off) for m, t, off in raw
                )
            elif kind == _ARRAY:
                ref = struct.unpack_from("<I", section, pos)[0]
            pos += _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_MEMBER.get(kind, 0) * vlen
            name = self._str(name_off) if name_off else ""
            self._types.append(_Type(kind, name, ref, members))
            if kind in (_STRUCT, _UNION) and name and name not in self._by_name:
                self._by_name[name] = len(self._types) - 1

    def _resolve(self, type_id: int) -> _Type:
        t = self._types[type_id]
        while t.kind in _QUALIFIERS:
            t = self._types[t.ref]
        return t

    def _find(self, t: _Type, member: str) -> tuple[int, int] | None:
        """(type id, bit offset) of `member`, searching anonymous struct/union members too."""
        for name, type_id, bits in t.members:
            if name == member:
                return type_id, bits
            inner = self._resolve(type_id)
            if not name and inner.kind in (_STRUCT, _UNION):
                found = self._find(inner, member)
                if found is not None:
                    return found[0], bits + found[1]
        return None

    def offset(self, path: str) -> int:
        """Byte offset of `struct.member[.member...]`, e.g. "mnt_namespace.ns.inum"."""
        struct_name, *members = path.split(".")
        if struct_name not in self._by_name:
            raise BtfError(f"the kernel's BTF has no struct {struct_name}")
        t, total = self._types[self._by_name[struct_name]], 0
        for member in members:
            found = self._find(t, member)
            if found is None:
                raise BtfError(f"the kernel's struct {t.name or '?'} has no member {member}")
            total += found[1]
            t = self._resolve(found[0])
        if total % 8:
            raise BtfError(f"{path} is a bit field, which the probes cannot read")
        return total // 8


def offsets(
    paths: list[str], vmlinux: Path = VMLINUX, cache_dir: Path = CACHE_DIR
) -> dict[str, int]:
    """Byte offsets of `paths` in the running kernel, cached per BTF blob (parsing takes ~1 s)."""
    try:
        blob = vmlinux.read_bytes()
    except OSError as exc:
        raise BtfError(
            f"cannot read {vmlinux} ({exc.strerror}); the kernel needs CONFIG_DEBUG_INFO_BTF"
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()[:16]
    cache = cache_dir / f"{digest}.json"
    known: dict[str, int] = {}
    if cache.exists():
        known = json.loads(cache.read_text())
    missing = [p for p in paths if p not in known]
    if missing:
        btf = Btf(blob)
        known.update({p: btf.offset(p) for p in missing})
        _write_cache(cache, known)
    return {p: known[p] for p in paths}


def _write_cache(cache: Path, known: dict[str, int]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, sort_keys=True))
        tmp.replace(cache)
    except OSError:
        pass  # an unwritable cache only costs the next start another parse


def defines(fields: dict[str, str], **kw: Path) -> list[str]:
    """Compiler flags `-DOFF_NAME=N` for a {define name: member path} table."""
    found = offsets(list(fields.values()), **kw)
    return [f"-DOFF_{name}={found[path]}" for name, path in fields.items()]
