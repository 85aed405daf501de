"""Setup and self-check of the node's eBPF prerequisites (`parallax agent check`, and agent start):
the effective capabilities (uid 0 alone is not enough), tracefs, kernel headers for BCC, BTF,
kallsyms, BCC itself, a trivial load of each kind of program the probes use (a raw tracepoint and
cgroup socket programs attached to, then detached from, the cgroup v2 root), and a self-test that
BPF-read ppid and mount-namespace inode match /proc. It repairs what it safely can (mounts
tracefs, links installed Debian headers); each failure is one sentence naming the fix.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import btf
from agent.localpod import cgroup2_mount
from agent.probes.loader import (
    OFFSETS,
    VM_ACCT_FUNCTIONS,
    BccMissing,
    KallsymsError,
    function_ranges,
    import_bcc,
)

TRACEFS = Path("/sys/kernel/tracing")
SYSCTL = Path("/proc/sys/kernel")
# What each capability is needed for, measured by running the probes under `setpriv` with one of
# them missing (tests/agent/test_check.py does it again): bit, name, what it is needed for.
CAP_BPF = (39, "CAP_BPF", "loading any program or map")
CAP_PERFMON = (38, "CAP_PERFMON", "attaching tracing programs and their kernel-memory reads")
CAP_NET_ADMIN = (12, "CAP_NET_ADMIN", "the network and DNS probes' cgroup socket programs")
CAP_SYSLOG = (34, "CAP_SYSLOG", "the real /proc/kallsyms addresses the capability probe uses")
CAP_SYS_RESOURCE = (24, "CAP_SYS_RESOURCE", "raising RLIMIT_MEMLOCK for maps before Linux 5.11")
Capability = tuple[int, str, str]
SELF_TEST = r"""
BPF_ARRAY(seen, u64, 3);
int on_sys_enter(struct bpf_raw_tracepoint_args *ctx) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_TGID)
        return 0;
    void *task = (void *)bpf_get_current_task(), *parent = 0, *nsproxy = 0, *mnt = 0;
    u32 ppid = 0, inum = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), (char *)task + OFF_REAL_PARENT);
    bpf_probe_read_kernel(&ppid, sizeof(ppid), (char *)parent + OFF_TGID);
    bpf_probe_read_kernel(&nsproxy, sizeof(nsproxy), (char *)task + OFF_TASK_NSPROXY);
    bpf_probe_read_kernel(&mnt, sizeof(mnt), (char *)nsproxy + OFF_NSPROXY_MNT_NS);
    bpf_probe_read_kernel(&inum, sizeof(inum), (char *)mnt + OFF_MNT_NS_INUM);
    int k0 = 0, k1 = 1, k2 = 2;
    u64 one = 1, p = ppid, i = inum;
    seen.update(&k0, &one);
    seen.update(&k1, &p);
    seen.update(&k2, &i);
    return 0;
}
int on_connect4(struct bpf_sock_addr *ctx) { return 1; }
int on_egress(struct __sk_buff *skb) { return 1; }
"""
# The cgroup programs the network and DNS probes attach to the v2 root, one of each kind: (function,
# bcc program type, attach type). Each is attached and at once detached again.
CGROUP_PROGRAMS = (
    ("on_connect4", "CGROUP_SOCK_ADDR", "CGROUP_INET4_CONNECT"),
    ("on_egress", "CGROUP_SKB", "CGROUP_INET_EGRESS"),
)
_ALLOW_MULTI = 2  # BPF_F_ALLOW_MULTI: beside systemd's and others' programs, as the probes attach


@dataclass(frozen=True)
class Result:
    """One check: its name, whether it passed, and a one-sentence detail or fix."""

    name: str
    ok: bool
    detail: str


def _sysctl(name: str, default: int) -> int:
    try:
        return int((SYSCTL / name).read_text())
    except (OSError, ValueError):
        return default


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """This process's effective capability set (CapEff), as a bit mask."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _kernel_before(release: str, major: int, minor: int) -> bool:
    found = re.match(r"(\d+)\.(\d+)", release)
    return found is not None and (int(found[1]), int(found[2])) < (major, minor)


def needed_capabilities(release: str | None = None) -> list[Capability]:
    """The capabilities the probes need on this node. CAP_SYSLOG only where /proc/kallsyms hides
    addresses without it (the kernel's kallsyms_show_value: kptr_restrict 0 with
    perf_event_paranoid <= 1 shows them to everyone); CAP_SYS_RESOURCE only before Linux 5.11,
    which charged BPF memory to RLIMIT_MEMLOCK, and only while that limit is finite."""
    needed = [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
    if not (_sysctl("kptr_restrict", 0) == 0 and _sysctl("perf_event_paranoid", 2) <= 1):
        needed.append(CAP_SYSLOG)
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    if _kernel_before(release or platform.release(), 5, 11) and memlock != resource.RLIM_INFINITY:
        needed.append(CAP_SYS_RESOURCE)
    return needed


def missing_capabilities(effective: int, needed: list[Capability]) -> list[Capability]:
    """The capabilities of `needed` that the mask `effective` lacks."""
    return [cap for cap in needed if not effective >> cap[0] & 1]


def check_privileges() -> Result:
    """The effective capabilities, whatever the uid: a root whose bounding set was cut (a
    container with capabilities dropped) cannot load what the agent loads."""
    needed = needed_capabilities()
    missing = missing_capabilities(effective_capabilities(), needed)
    if missing:
        listed = ", ".join(f"{name} (needed for {why})" for _, name, why in missing)
        them = "it" if len(missing) == 1 else "them"
        return Result(
            "privileges",
            False,
            f"Missing {listed}: add {them} to the agent's capabilities "
            "(securityContext.capabilities.add) or run it as root with every capability.",
        )
    names = ", ".join(name.removeprefix("CAP_") for _, name, _ in needed)
    return Result("privileges", True, f"effective capabilities include {names}")


def check_tracefs() -> Result:
    if not (TRACEFS / "events").exists():
        subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, check=False
        )
    if (TRACEFS / "events").exists():
        return Result("tracefs", True, f"mounted at {TRACEFS}")
    return Result("tracefs", False, f"Mount tracefs: mount -t tracefs nodev {TRACEFS}.")


_DEBIAN_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


def _version_key(name: str) -> tuple[str | int, ...]:
    """A natural sort key, like `sort -V`: 6.1.0-57 sorts after 6.1.0-9."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _debian_arch() -> str:
    return _DEBIAN_ARCHES.get(platform.machine(), "amd64")


def newest_headers(src: Path, arch: str = "amd64") -> tuple[Path, Path] | None:
    """The newest installed Debian headers for `arch` (by version, as `sort -V` orders them) and
    the -common directory of that same version (the arch directory when it has none), or None."""
    found = max(
        src.glob(f"linux-headers-*-{arch}"), key=lambda p: _version_key(p.name), default=None
    )
    if found is None:
        return None
    version = found.name.removeprefix("linux-headers-").removesuffix(f"-{arch}")
    common = src / f"linux-headers-{version}-common"
    return found, common if common.is_dir() else found


def check_headers(modules: Path = Path("/lib/modules"), src: Path = Path("/usr/src")) -> Result:
    build = modules / platform.release() / "build"
    if not (build / "include").exists():
        newest = newest_headers(src, _debian_arch())
        if newest is not None:
            build.parent.mkdir(parents=True, exist_ok=True)
            for link, target in zip((build, build.parent / "source"), newest, strict=True):
                link.unlink(missing_ok=True)
                link.symlink_to(target)
    if (build / "include").exists():
        return Result("kernel headers", True, f"{build} -> {build.resolve()}")
    fix = f"apt-get install linux-headers-{_debian_arch()}"
    return Result("kernel headers", False, f"Install kernel headers: {fix}.")


def check_btf() -> Result:
    try:
        found = btf.offsets(list(OFFSETS.values()))
    except btf.BtfError as exc:
        return Result("BTF", False, f"{exc}; use a kernel built with CONFIG_DEBUG_INFO_BTF=y.")
    return Result("BTF", True, f"{len(found)} struct member offsets from {btf.VMLINUX}")


def check_bcc() -> Result:
    try:
        bcc = import_bcc()
    except BccMissing as exc:
        return Result("BCC", False, f"{exc}.")
    return Result("BCC", True, f"bcc from {Path(bcc.__file__).parent}")


def check_kallsyms() -> Result:
    try:
        ranges = function_ranges(VM_ACCT_FUNCTIONS)
    except KallsymsError as exc:
        return Result(
            "kallsyms",
            False,
            f"{_kallsyms_cause(exc)} (the capability probe needs real addresses).",
        )
    return Result("kallsyms", True, f"{len(ranges)} memory-accounting text ranges")


def _kallsyms_cause(exc: KallsymsError) -> str:
    """Why /proc/kallsyms hides addresses from this process, as the fix."""
    if "hides addresses" not in str(exc):
        return str(exc)
    if _sysctl("kptr_restrict", 0) >= 2:
        return (
            "/proc/kallsyms hides addresses from everyone: set the sysctl kernel.kptr_restrict to 1"
        )
    if not effective_capabilities() >> CAP_SYSLOG[0] & 1:
        return "/proc/kallsyms hides addresses from this process: grant it CAP_SYSLOG"
    return str(exc)


def default_cgroup_root() -> Path:
    """The cgroup v2 root the agent attaches to: PARALLAX_CGROUP_ROOT, else where v2 is mounted."""
    raw = os.environ.get("PARALLAX_CGROUP_ROOT")
    return Path(raw) if raw else cgroup2_mount()


def self_test(cgroup_root: Path | None = None) -> list[Result]:
    """Load the trivial programs (one compile), attach each kind the probes use, and compare
    what the tracing one reads with /proc."""
    bcc = import_bcc()
    flags = [*btf.defines(OFFSETS), f"-DTARGET_TGID={os.getpid()}"]
    try:
        bpf = bcc.BPF(text=SELF_TEST.encode(), cflags=flags)
        bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_sys_enter")
    except Exception as exc:  # bcc raises bare Exception on compile, load and attach errors
        return [
            Result("program load", False, f"Loading a trivial program failed ({exc}): {_fix()}")
        ]
    try:
        os.getppid()
        seen = bpf[b"seen"]
        got = [int(seen[seen.Key(i)].value) for i in range(3)]
        failed = _cgroup_attach(bcc, bpf, cgroup_root)
    finally:
        bpf.cleanup()
    if failed is not None:
        return [failed]
    want = [1, os.getppid(), os.stat("/proc/self/ns/mnt").st_ino]
    load = Result(
        "program load", True, "raw tracepoint and cgroup socket programs loaded and attached"
    )
    if got == want:
        return [load, Result("self-test", True, f"BPF read ppid {got[1]}, mnt ns {got[2]}")]
    detail = f"BPF read (ran, ppid, mntns) {got} but /proc says {want}"
    fix = "the BTF offsets do not fit this kernel; refusing to run (report this kernel version)."
    return [load, Result("self-test", False, f"{detail}: {fix}")]


def _fix() -> str:
    """What to do when the trivial tracing program fails to load."""
    missing = missing_capabilities(effective_capabilities(), [CAP_BPF, CAP_PERFMON])
    if missing:
        return f"grant {' and '.join(name for _, name, _ in missing)}."
    return "check the kernel headers link and that the kernel allows BPF (not locked down)."


def _cgroup_attach(bcc: Any, bpf: Any, root: Path | None) -> Result | None:
    """Attach each CGROUP_PROGRAMS program to `root` (default: default_cgroup_root()) and detach
    it again; a Result when one fails."""
    try:
        root = root or default_cgroup_root()
    except RuntimeError as exc:  # no cgroup v2 mount at all
        return Result("program load", False, f"{exc}.")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        fix = "mount cgroup v2 there or set PARALLAX_CGROUP_ROOT to its mount point"
        return Result(
            "program load",
            False,
            f"The cgroup v2 root {root} cannot be opened ({exc.strerror}): {fix}.",
        )
    try:
        for name, prog_type, attach_type in CGROUP_PROGRAMS:
            kind = getattr(bcc.BPFAttachType, attach_type)
            try:
                func = bpf.load_func(name.encode(), getattr(bcc.BPF, prog_type), attach_type=kind)
                bcc.BPF.attach_func(func, fd, kind, _ALLOW_MULTI)
            except Exception as exc:  # bcc raises bare Exception on load and attach errors
                return Result("program load", False, _cgroup_failure(prog_type, root, exc))
            bcc.BPF.detach_func(func, fd, kind)
    finally:
        os.close(fd)
    return None


def _cgroup_failure(prog_type: str, root: Path, exc: Exception) -> str:
    what = f"A {prog_type} program could not be loaded and attached to {root} ({exc})"
    if not effective_capabilities() >> CAP_NET_ADMIN[0] & 1:
        return f"{what}: grant CAP_NET_ADMIN, needed for {CAP_NET_ADMIN[2]}."
    return f"{what}: set PARALLAX_CGROUP_ROOT to the cgroup v2 mount point."


CHECKS: tuple[Callable[[], Result], ...] = (
    check_privileges,
    check_tracefs,
    check_headers,
    check_btf,
    check_kallsyms,
    check_bcc,
)


def run_checks(cgroup_root: Path | None = None) -> list[Result]:
    """All checks in order; stops at the first failure, since later ones depend on it. The
    program load attaches to `cgroup_root` (default: default_cgroup_root())."""
    results: list[Result] = []
    for check in CHECKS:
        results.append(check())
        if not results[-1].ok:
            return results
    return results + self_test(cgroup_root)
