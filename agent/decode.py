"""Ring-buffer records of agent/probes: their layouts, the kinds that stay
`parallax.runtime.v1.Event` messages (exec, DNS; cgroup_id set, attribution left for
agent.attribution) and cgroup changes, and syscall numbers to names for the running kernel's
table from libseccomp. The high-volume kinds are decoded by agent.compact.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import time
from dataclasses import dataclass

import pyseccomp
from parallax.runtime.v1 import event_pb2 as pb
from parallax.type.v1 import platform_pb2

from agent.probes import dns

HEADER = struct.Struct("<IIIIQQ16s")
DEVIATION = struct.Struct("<II")
# The body of an exec record (process.c struct exec_event after the header).
EXEC = struct.Struct("<IIIIIi3HH3II256s1024s1024s")
_ARG_SLOT, _ARG_MAX, _CWD_NAME, _CWD_UNKNOWN = 128, 256, 64, 0xFFFF
# fork: child pid; exit: exit code; cap: number, flags (CAP_ALLOWED | CAP_STARTUP)
PAIR = struct.Struct("<II")
CAP_ALLOWED, CAP_STARTUP = 1, 2  # caps.c: the check succeeded; made before the first exec
OPEN = struct.Struct("<iIII256s")
# The body of a flow record: network.c struct flow_key (the de-duplication key), return value last.
FLOW = struct.Struct("<QBBHHH16s16si4x")
# The fixed part of a DNS record (dns.c struct dns_event); the copied message follows.
_DNS = struct.Struct("<BBHI16s")
_CGROUP = struct.Struct("<256s")
CGROUP_MKDIR, CGROUP_RMDIR = 16, 17
ARCH = platform_pb2.ARCHITECTURE_X86_64
PROTOCOLS = {6: platform_pb2.PROTOCOL_TCP, 17: platform_pb2.PROTOCOL_UDP}
FAMILIES = {2: pb.ADDRESS_FAMILY_INET, 10: pb.ADDRESS_FAMILY_INET6}
# One readable block; a capability's number is its index.
CAPABILITIES = (  # noqa: SIM905
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
    "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
    "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
    "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
    "CHECKPOINT_RESTORE"
).split()


@dataclass(frozen=True)
class CgroupChange:
    """A tracked cgroup created (learned from cgroup_mkdir) or removed."""

    cgroup_id: int
    path: str
    created: bool


@functools.cache
def syscall_name(nr: int) -> str:
    """The x86_64 name of syscall `nr` from libseccomp's table; "" when it has none."""
    try:
        name = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, nr)
    except ValueError:
        return ""
    return name.decode() if isinstance(name, bytes) else ""


def syscall_number(name: str) -> int:
    """The x86_64 number of syscall `name` (ValueError when libseccomp has none)."""
    nr = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name)
    if not isinstance(nr, int) or nr < 0:
        raise ValueError(f"no x86_64 syscall named {name}")
    return nr


def capability_name(number: int) -> str:
    """CAP_* name of a capability number; CAP_<n> past the known table."""
    return "CAP_" + (CAPABILITIES[number] if number < len(CAPABILITIES) else str(number))


def cstr(raw: bytes) -> str:
    """A NUL-terminated byte field as text."""
    return raw.partition(b"\0")[0].decode(errors="replace")


_V4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96


@functools.lru_cache(maxsize=4096)  # peers repeat; ipaddress costs microseconds per call
def endpoint(family: int, raw: bytes) -> tuple[int, str]:
    """The family (2 or 10) and text form of an IPv4 (first 4 bytes) or IPv6 address. An
    IPv4-mapped IPv6 address (::ffff:a.b.c.d, how a dual-stack socket sees an IPv4 peer) is the
    IPv4 address with family 2, so it matches DNS answers and IPv4 ipBlocks."""
    if family == 2:
        return 2, str(ipaddress.IPv4Address(raw[:4]))
    if raw[:12] == _V4_MAPPED:
        return 2, str(ipaddress.IPv4Address(raw[12:16]))
    return 10, str(ipaddress.IPv6Address(raw[:16]))


BOOT_OFFSET_NS = time.time_ns() - time.monotonic_ns()


def decode_message(record: bytes) -> pb.Event | CgroupChange | None:
    """One ring-buffer record of a kind without a compact form (exec, DNS) or a cgroup change;
    None for any other type. agent.compact.decode_event decodes every kind."""
    kind, pid, ppid, uid, ts, cgid, comm = HEADER.unpack_from(record)
    body = record[HEADER.size :]
    if kind in (CGROUP_MKDIR, CGROUP_RMDIR):
        return CgroupChange(cgid, cstr(_CGROUP.unpack_from(body)[0]), kind == CGROUP_MKDIR)
    event = pb.Event(monotonic_ns=ts, cgroup_id=cgid, pid=pid, ppid=ppid, uid=uid)
    event.comm = cstr(comm)
    event.event_time.FromNanoseconds(ts + BOOT_OFFSET_NS)
    builder = _BUILDERS.get(kind)
    if builder is None:
        return None
    builder(event, body)
    return event


def _exec(event: pb.Event, body: bytes) -> None:
    fields = EXEC.unpack_from(body)
    euid, gid, egid, args_len, flags, ret = fields[:6]
    modes, depth, rdevs, (path, args, cwd) = fields[6:9], fields[9], fields[10:13], fields[14:]
    e = event.exec
    e.path, e.euid, e.gid, e.egid, e.return_value = cstr(path), euid, gid, egid, ret
    if flags & 2:  # a failed exec: argv[i] in slot i, read from the caller's memory
        argv = [
            args[i * _ARG_SLOT : (i + 1) * _ARG_SLOT].split(b"\0", 1)[0] for i in range(args_len)
        ]
    else:
        argv = args[:args_len].split(b"\0")
        if argv and argv[-1] == b"":
            argv.pop()
    # the contract's limits: at most 64 arguments of at most 256 bytes each
    e.argv.extend(a[:_ARG_MAX].decode(errors="replace")[:_ARG_MAX] for a in argv[:64])
    e.argv_truncated = bool(flags & 1) or len(argv) > 64 or any(len(a) > _ARG_MAX for a in argv)
    e.stdin_kind, e.stdout_kind, e.stderr_kind = (
        fd_kind(mode, rdev) for mode, rdev in zip(modes, rdevs, strict=True)
    )
    if depth != _CWD_UNKNOWN:
        names = [cstr(cwd[i * _CWD_NAME : (i + 1) * _CWD_NAME]) for i in range(depth)]
        e.cwd = "/" + "/".join(reversed(names))


def fd_kind(mode: int, rdev: int) -> pb.FileDescriptorKind.ValueType:
    """What an fd with inode mode `mode` and device `rdev` (kernel dev_t) is connected to."""
    kind = mode & 0o170000
    if kind == 0o020000:  # a character device: terminals by major number, else like a file
        return pb.FILE_DESCRIPTOR_KIND_TTY if rdev >> 20 in _TTY_MAJORS else _FILE
    return _FD_KINDS.get(kind, pb.FILE_DESCRIPTOR_KIND_UNSPECIFIED)


_FILE = pb.FILE_DESCRIPTOR_KIND_FILE
# S_IFSOCK, S_IFIFO, S_IFREG; /dev/tty*, /dev/console, /dev/ptmx and /dev/pts/* by major number.
_FD_KINDS = {
    0o140000: pb.FILE_DESCRIPTOR_KIND_SOCKET,
    0o010000: pb.FILE_DESCRIPTOR_KIND_PIPE,
    0o100000: _FILE,
}
_TTY_MAJORS = frozenset({4, 5, *range(136, 144)})


def _dns(event: pb.Event, body: bytes) -> None:
    egress, family, port, length, server = _DNS.unpack_from(body)
    dns.fill(event.dns_query, body[_DNS.size : _DNS.size + length], bool(egress))
    event.dns_query.server_address = endpoint(family, server)[1]
    event.dns_query.server_port = port


def dns_transaction(record: bytes) -> tuple[int, bool]:
    """The DNS transaction id of a DNS record and whether it was received (an answer)."""
    egress = record[HEADER.size]
    data = HEADER.size + _DNS.size
    return int.from_bytes(record[data : data + 2], "big"), not egress


# The kinds that stay Event messages; the others have a compact form (agent.compact).
_BUILDERS = {
    pb.EVENT_TYPE_EXEC: _exec,
    pb.EVENT_TYPE_DNS_QUERY: _dns,
}
