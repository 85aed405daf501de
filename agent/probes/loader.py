"""Compiles all probes into one BPF object (one ~3 s compile) and attaches each group on demand.

The only module that touches bcc: its objects are `Any` here and nowhere else. Kernel struct
offsets (agent.btf) and kernel function text ranges (/proc/kallsyms) are passed as -D defines.
Callers: agent.probes.maps, the recorder, the tests.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import enum
import os
import sys
from pathlib import Path
from typing import Any

from agent import btf

SOURCE_DIR = Path(__file__).parent
SOURCES = ("common.h", "syscalls.c", "process.c", "files.c", "network.c", "dns.c", "caps.c")
BCC_DIST = "/usr/lib/python3/dist-packages"
OFFSETS = {
    "REAL_PARENT": "task_struct.real_parent",
    "TGID": "task_struct.tgid",
    "PID": "task_struct.pid",
    "EXIT_CODE": "task_struct.exit_code",
    "TASK_CRED": "task_struct.cred",
    "TASK_MM": "task_struct.mm",
    "TASK_NSPROXY": "task_struct.nsproxy",
    "NSPROXY_MNT_NS": "nsproxy.mnt_ns",
    "MNT_NS_INUM": "mnt_namespace.ns.inum",
    "CRED_EUID": "cred.euid",
    "CRED_EGID": "cred.egid",
    "MM_ARG_START": "mm_struct.arg_start",
    "MM_ARG_END": "mm_struct.arg_end",
    "SK_CGRP_DATA": "sock.sk_cgrp_data",
    "SK_ERR": "sock.sk_err",
    "SKCD_CGROUP": "sock_cgroup_data.cgroup",
    "CGROUP_KN": "cgroup.kn",
    "KN_ID": "kernfs_node.id",
    "TASK_FILES": "task_struct.files",
    "FILES_FDT": "files_struct.fdt",
    "FDT_FD": "fdtable.fd",
    "FDT_MAX_FDS": "fdtable.max_fds",
    "FILE_INODE": "file.f_inode",
    "INODE_MODE": "inode.i_mode",
    "INODE_RDEV": "inode.i_rdev",
    "TASK_FS": "task_struct.fs",
    "FS_ROOT": "fs_struct.root",
    "FS_PWD": "fs_struct.pwd",
    "PATH_MNT": "path.mnt",
    "PATH_DENTRY": "path.dentry",
    "VFSMOUNT_MNT_ROOT": "vfsmount.mnt_root",
    "MOUNT_MNT": "mount.mnt",
    "MOUNT_MNT_PARENT": "mount.mnt_parent",
    "MOUNT_MNT_MOUNTPOINT": "mount.mnt_mountpoint",
    "DENTRY_D_NAME": "dentry.d_name",
    "DENTRY_D_PARENT": "dentry.d_parent",
    "QSTR_NAME": "qstr.name",
    "PT_REGS_ORIG_AX": "pt_regs.orig_ax",
    "PT_REGS_CS": "pt_regs.cs",
    "PT_REGS_R10": "pt_regs.r10",
}
KALLSYMS = Path("/proc/kallsyms")
# The callers of cap_capable() that make the memory-overcommit check, which caps.c drops: the
# first is required (it is where the check is on 6.x), the second exists where not inlined.
VM_ACCT_FUNCTIONS = ("security_vm_enough_memory_mm", "cap_vm_enough_memory")


class KallsymsError(Exception):
    """/proc/kallsyms hides addresses or lacks a function the probes need."""


def function_ranges(names: tuple[str, ...], kallsyms: Path = KALLSYMS) -> list[tuple[int, int]]:
    """[start, end) text ranges of the kernel's functions `names` (with compiler clones such as
    `name.cold`), each ending at the next higher symbol. Raises KallsymsError unless the first
    name is found with real addresses (root with kernel.kptr_restrict < 2)."""
    starts: dict[str, list[int]] = {}
    addresses: set[int] = set()
    for line in kallsyms.read_text().splitlines():
        fields = line.split()
        if len(fields) != 3:  # a module symbol ("[module]" column): not in the core text
            continue
        address = int(fields[0], 16)
        addresses.add(address)
        base = fields[2].split(".", 1)[0]
        if base in names and fields[1] in "tT":
            starts.setdefault(base, []).append(address)
    first = starts.get(names[0], [])
    if not first:
        raise KallsymsError(f"{kallsyms} has no function {names[0]}")
    if 0 in first:
        raise KallsymsError(
            f"{kallsyms} hides addresses: run as root with kernel.kptr_restrict < 2"
        )
    ordered = sorted(addresses)
    ranges = []
    for name in names:
        for start in sorted(starts.get(name, [])):
            after = bisect.bisect_right(ordered, start)
            ranges.append((start, ordered[after] if after < len(ordered) else start + 1))
    return ranges


def vm_acct_define(kallsyms: Path = KALLSYMS) -> str:
    """-DVM_ACCT_CALLER(a)=...: whether a kernel address is in a memory-accounting caller."""
    tests = "||".join(
        f"((a)>=0x{lo:x}ULL&&(a)<0x{hi:x}ULL)"
        for lo, hi in function_ranges(VM_ACCT_FUNCTIONS, kallsyms)
    )
    return f"-DVM_ACCT_CALLER(a)=({tests})"


def _release_compiler_heap() -> None:
    """Hand the compiler's freed heap back to the kernel: ~27 MB of the agent's RSS after a
    compile (glibc keeps freed memory otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# Shared libraries only the compiler uses; their code pages stay resident after a compile.
_COMPILER_LIBRARIES = ("libLLVM", "libclang")
_MADV_PAGEOUT = 21  # Linux 5.4+


def release_compiler_pages(maps: Path = Path("/proc/self/maps")) -> int:
    """Ask the kernel to page out LLVM's and clang's non-writable mappings once the probes are
    compiled: ~75 of the agent's ~120 MB RSS after a compile are their code and read-only data.
    MADV_PAGEOUT only reclaims (clean pages are re-read from the file if another compile
    touches them; nothing is lost), and writable mappings are left alone. Returns the bytes
    advised; 0 where the kernel does not know the advice."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for line in maps.read_text().splitlines():
        fields = line.split()
        if len(fields) < 6 or "w" in fields[1]:
            continue
        if not Path(fields[5]).name.startswith(_COMPILER_LIBRARIES):
            continue
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if libc.madvise(start, end - start, _MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


class BccMissing(Exception):
    """BCC's Python module is not installed."""


def import_bcc() -> Any:
    """The bcc module, from the venv or else Debian's python3-bpfcc in dist-packages."""
    try:
        import bcc
    except ImportError:
        if BCC_DIST not in sys.path:
            sys.path.append(BCC_DIST)
        try:
            import bcc
        except ImportError as exc:
            raise BccMissing(
                "BCC is absent: install it with `apt-get install python3-bpfcc`"
            ) from exc
    return bcc


class Group(enum.Enum):
    """Programs attached and detached together."""

    SYSCALLS = "syscalls"
    CGROUPS = "cgroups"
    PROCESS = "process"
    EXEC_FAILURES = "exec_failures"
    FILES = "files"
    NETWORK = "network"
    DNS = "dns"
    CAPS = "caps"


# The groups a node agent or a recording attaches: everything but the syscall learner, which
# attaches itself while some cgroup learns. EXEC_FAILURES uses syscalls:* tracepoints like FILES,
# whose per-syscall tax the machine pays once for all of them.
EVENT_GROUPS = (
    Group.PROCESS,
    Group.EXEC_FAILURES,
    Group.FILES,
    Group.NETWORK,
    Group.DNS,
    Group.CAPS,
)

_TRACEPOINTS: dict[Group, list[tuple[str, str]]] = {
    Group.CGROUPS: [
        ("cgroup:cgroup_mkdir", "on_cgroup_mkdir"),
        ("cgroup:cgroup_rmdir", "on_cgroup_rmdir"),
    ],
    Group.PROCESS: [
        ("sched:sched_process_exec", "on_exec"),
        ("sched:sched_process_exit", "on_exit"),
    ],
    Group.EXEC_FAILURES: [
        ("syscalls:sys_enter_execve", "on_enter_execve"),
        ("syscalls:sys_enter_execveat", "on_enter_execveat"),
        ("syscalls:sys_exit_execve", "on_exit_execve"),
        ("syscalls:sys_exit_execveat", "on_exit_execve"),
    ],
    Group.FILES: [
        ("syscalls:sys_enter_open", "on_enter_open"),
        ("syscalls:sys_enter_openat", "on_enter_openat"),
        ("syscalls:sys_enter_openat2", "on_enter_openat2"),
        ("syscalls:sys_exit_open", "on_exit_open"),
        ("syscalls:sys_exit_openat", "on_exit_open"),
        ("syscalls:sys_exit_openat2", "on_exit_open"),
    ],
    Group.NETWORK: [("sock:inet_sock_set_state", "on_inet_state")],
    Group.CAPS: [("capability:cap_capable", "on_cap_capable")],
}
_RAW_TRACEPOINTS: dict[Group, list[tuple[str, str]]] = {
    Group.SYSCALLS: [("sys_enter", "on_sys_enter"), ("sched_process_exec", "on_exec_mark")],
    Group.PROCESS: [("sched_process_fork", "on_fork")],
}
# (function, bcc program type name, attach type name) for programs attached to the v2 root.
_CGROUP_PROGS: dict[Group, list[tuple[str, str, str]]] = {
    Group.NETWORK: [
        ("on_connect4", "CGROUP_SOCK_ADDR", "CGROUP_INET4_CONNECT"),
        ("on_connect6", "CGROUP_SOCK_ADDR", "CGROUP_INET6_CONNECT"),
        ("on_sendmsg4", "CGROUP_SOCK_ADDR", "CGROUP_UDP4_SENDMSG"),
        ("on_sendmsg6", "CGROUP_SOCK_ADDR", "CGROUP_UDP6_SENDMSG"),
    ],
    Group.DNS: [
        ("on_skb_egress", "CGROUP_SKB", "CGROUP_INET_EGRESS"),
        ("on_skb_ingress", "CGROUP_SKB", "CGROUP_INET_INGRESS"),
    ],
}
_ALLOW_MULTI = 2  # BPF_F_ALLOW_MULTI: coexist with systemd's and others' cgroup programs


# Linux's default ip_local_port_range start: a UDP send from a lower port is a reply (network.c
# keys it by that port; agent.probes.counts mirrors the key).
EPHEMERAL_MIN = 32768


def source_text(extra: tuple[str, ...] = ()) -> str:
    """The concatenated C of all probes (plus `extra` snippets, for tests)."""
    return "\n".join([(SOURCE_DIR / name).read_text() for name in SOURCES] + list(extra))


def cflags(ring_pages: int) -> list[str]:
    """-D defines: BTF member offsets, kernel text ranges (kallsyms), the ring size, the v2
    hierarchy id and where ephemeral ports start."""
    return [
        *btf.defines(OFFSETS),
        vm_acct_define(),
        f"-DRINGBUF_PAGES={ring_pages}",
        "-DCGROUP2_ROOT=0",
        f"-DEPHEMERAL_MIN={EPHEMERAL_MIN}",
    ]


class Loader:
    """One compiled BPF object; `attach(group)` and `detach(group)` are idempotent."""

    def __init__(self, cgroup_root: Path, ring_pages: int = 4096, text: str | None = None) -> None:
        bcc = import_bcc()
        self._bcc = bcc
        source = (text or source_text()).encode()
        self.bpf: Any = bcc.BPF(text=source, cflags=cflags(ring_pages))
        _release_compiler_heap()
        release_compiler_pages()
        self._cgroup_fd = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
        self._attached: set[Group] = set()
        self._functions: dict[str, Any] = {}

    @property
    def attached(self) -> frozenset[Group]:
        """The groups currently attached."""
        return frozenset(self._attached)

    def _function(self, name: str, prog_type: str, attach_type: str) -> Any:
        if name not in self._functions:
            types = self._bcc.BPFAttachType
            self._functions[name] = self.bpf.load_func(
                name.encode(),
                getattr(self._bcc.BPF, prog_type),
                attach_type=getattr(types, attach_type),
            )
        return self._functions[name]

    def attach(self, group: Group) -> None:
        """Attach every program of `group` (no-op when attached)."""
        if group in self._attached:
            return
        for tp, fn in _TRACEPOINTS.get(group, []):
            self.bpf.attach_tracepoint(tp=tp.encode(), fn_name=fn.encode())
        for tp, fn in _RAW_TRACEPOINTS.get(group, []):
            self.bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=fn.encode())
        for fn, prog_type, attach_type in _CGROUP_PROGS.get(group, []):
            attach = getattr(self._bcc.BPFAttachType, attach_type)
            func = self._function(fn, prog_type, attach_type)
            self._bcc.BPF.attach_func(func, self._cgroup_fd, attach, _ALLOW_MULTI)
        self._attached.add(group)

    def detach(self, group: Group) -> None:
        """Detach every program of `group` (no-op when detached)."""
        if group not in self._attached:
            return
        for tp, _fn in _TRACEPOINTS.get(group, []):
            self.bpf.detach_tracepoint(tp=tp.encode())
        for tp, _fn in _RAW_TRACEPOINTS.get(group, []):
            self.bpf.detach_raw_tracepoint(tp=tp.encode())
        for fn, prog_type, attach_type in _CGROUP_PROGS.get(group, []):
            attach = getattr(self._bcc.BPFAttachType, attach_type)
            func = self._function(fn, prog_type, attach_type)
            self._bcc.BPF.detach_func(func, self._cgroup_fd, attach)
        self._attached.discard(group)

    def table(self, name: str) -> Any:
        """A BPF map by name."""
        return self.bpf[name.encode()]

    def close(self) -> None:
        """Detach everything and release the BPF object."""
        for group in list(self._attached):
            self.detach(group)
        self.bpf.cleanup()
        os.close(self._cgroup_fd)
