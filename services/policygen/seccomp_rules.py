"""Seccomp knowledge as data: dangerous allowances with stable IDs (SCX-*, never reused), the
syscalls the containerd/runc RuntimeDefault profile refuses to a container with Kubernetes'
default capabilities, and the container runtime's own start-up syscalls. seccomp.py applies them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DangerousSyscall:
    """A syscall whose allowance widens an attacker's reach; `reason` says how."""

    rule_id: str
    names: tuple[str, ...]
    severity: str
    reason: str


DANGEROUS: tuple[DangerousSyscall, ...] = (
    DangerousSyscall(
        "SCX-001",
        ("init_module", "finit_module", "delete_module", "create_module"),
        "CRITICAL",
        "can load or unload kernel modules: code execution in the kernel",
    ),
    DangerousSyscall(
        "SCX-002",
        ("kexec_load", "kexec_file_load"),
        "CRITICAL",
        "can replace the running kernel",
    ),
    DangerousSyscall(
        "SCX-003",
        ("mount", "umount", "umount2", "move_mount", "open_tree", "fsopen", "fsmount", "fspick"),
        "HIGH",
        "can change mounts, the usual first step of a container escape",
    ),
    DangerousSyscall(
        "SCX-004",
        ("unshare", "setns", "pivot_root"),
        "HIGH",
        "can create or enter namespaces, exposing kernel attack surface meant for the host",
    ),
    DangerousSyscall(
        "SCX-005",
        ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
        "HIGH",
        "can read or write other processes' memory",
    ),
    DangerousSyscall(
        "SCX-006",
        ("bpf", "perf_event_open"),
        "HIGH",
        "can load eBPF programs or read kernel performance data, a frequent kernel exploit path",
    ),
    DangerousSyscall(
        "SCX-007",
        ("keyctl", "add_key", "request_key"),
        "MEDIUM",
        "reaches the kernel keyring, which is not namespaced",
    ),
    DangerousSyscall(
        "SCX-008",
        ("open_by_handle_at", "name_to_handle_at"),
        "HIGH",
        "can open host files by handle, bypassing the mount namespace (the Shocker escape)",
    ),
    DangerousSyscall(
        "SCX-009",
        ("userfaultfd",),
        "MEDIUM",
        "lets an attacker stall the kernel at will, widening race-condition exploits",
    ),
    DangerousSyscall(
        "SCX-010",
        ("iopl", "ioperm"),
        "HIGH",
        "gives direct access to I/O ports",
    ),
    DangerousSyscall(
        "SCX-011",
        ("reboot", "swapon", "swapoff", "acct", "syslog", "quotactl"),
        "MEDIUM",
        "acts on the whole host, not just the container",
    ),
    DangerousSyscall(
        "SCX-012",
        ("clock_settime", "clock_adjtime", "settimeofday", "stime", "adjtimex"),
        "MEDIUM",
        "can change the host clock, which is not namespaced",
    ),
)

_CAP = "refused unless the container has {cap}"
_NEVER = "never allowed by the default profile"
# Why RuntimeDefault refuses each syscall to a container with Kubernetes' default capabilities.
RUNTIME_DEFAULT_BLOCKED: dict[str, str] = {
    **dict.fromkeys(
        (
            "bpf", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
            "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree",
            "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname",
            "setns", "umount", "umount2", "unshare",
        ),
        _CAP.format(cap="CAP_SYS_ADMIN"),
    ),
    **dict.fromkeys(
        ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev"),
        _CAP.format(cap="CAP_SYS_PTRACE"),
    ),
    **dict.fromkeys(
        ("delete_module", "finit_module", "init_module"), _CAP.format(cap="CAP_SYS_MODULE")
    ),
    **dict.fromkeys(("kexec_file_load", "kexec_load", "reboot"), _CAP.format(cap="CAP_SYS_BOOT")),
    **dict.fromkeys(
        ("clock_adjtime", "clock_settime", "settimeofday", "stime"),
        _CAP.format(cap="CAP_SYS_TIME"),
    ),
    **dict.fromkeys(("get_mempolicy", "mbind", "set_mempolicy"), _CAP.format(cap="CAP_SYS_NICE")),
    **dict.fromkeys(("iopl", "ioperm"), _CAP.format(cap="CAP_SYS_RAWIO")),
    "acct": _CAP.format(cap="CAP_SYS_PACCT"),
    "pivot_root": _CAP.format(cap="CAP_SYS_ADMIN"),
    "syslog": _CAP.format(cap="CAP_SYSLOG"),
    "vhangup": _CAP.format(cap="CAP_SYS_TTY_CONFIG"),
    **dict.fromkeys(
        (
            "add_key", "create_module", "get_kernel_syms", "io_uring_enter", "io_uring_register",
            "io_uring_setup", "keyctl", "move_pages", "nfsservctl", "open_by_handle_at",
            "query_module", "request_key", "swapoff", "swapon", "_sysctl", "sysfs", "uselib",
            "userfaultfd", "ustat", "vm86", "vm86old",
        ),
        _NEVER,
    ),
}  # fmt: skip

# Syscalls runc and crun make after loading the container's filter and before the workload's
# execve (capabilities, ids, the Go runtime's housekeeping, the exec itself); a profile learned
# without seeing the container start needs them, or the container never starts.
RUNTIME_BASE: frozenset[str] = frozenset(
    (
        "arch_prctl", "brk", "capget", "capset", "chdir", "close", "close_range", "epoll_ctl",
        "epoll_pwait", "execve", "exit", "exit_group", "fchdir", "fcntl", "fstat", "fstatfs",
        "futex", "getdents64", "getpid", "getppid", "gettid", "getuid", "madvise", "mmap",
        "mprotect", "munmap", "nanosleep", "newfstatat", "openat", "prctl", "read", "readlinkat",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sched_getaffinity", "sched_yield",
        "set_tid_address", "setgid", "setgroups", "setuid", "sigaltstack", "tgkill", "write",
    )
)  # fmt: skip


def dangerous_index() -> dict[str, DangerousSyscall]:
    """Return the dangerous rules keyed by syscall name."""
    return {name: rule for rule in DANGEROUS for name in rule.names}
