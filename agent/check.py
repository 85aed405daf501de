"""Setup and self-check of the node's eBPF prerequisites (`parallax agent check`, and agent start):
privileges, tracefs, kernel headers for BCC, BTF, BCC itself, a trivial program load, and a
self-test that BPF-read ppid and mount-namespace inode match /proc. It repairs what it safely can
(mounts tracefs, links installed Debian headers); each failure is one sentence naming the fix.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import btf
from agent.probes.loader import (
    OFFSETS,
    VM_ACCT_FUNCTIONS,
    BccMissing,
    KallsymsError,
    function_ranges,
    import_bcc,
)

TRACEFS = Path("/sys/kernel/tracing")
_NEEDED_CAPS = {21: "CAP_SYS_ADMIN", 38: "CAP_PERFMON", 39: "CAP_BPF", 12: "CAP_NET_ADMIN"}
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
"""


@dataclass(frozen=True)
class Result:
    """One check: its name, whether it passed, and a one-sentence detail or fix."""

    name: str
    ok: bool
    detail: str


def check_privileges() -> Result:
    if os.geteuid() == 0:
        return Result("privileges", True, "running as root")
    status = Path("/proc/self/status").read_text()
    effective = int(
        next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff")), 16
    )
    missing = [name for bit, name in _NEEDED_CAPS.items() if not effective >> bit & 1]
    if missing:
        return Result("privileges", False, f"Run as root or grant {', '.join(missing)}.")
    return Result("privileges", True, "capabilities present")


def check_tracefs() -> Result:
    if not (TRACEFS / "events").exists():
        subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, check=False
        )
    if (TRACEFS / "events").exists():
        return Result("tracefs", True, f"mounted at {TRACEFS}")
    return Result("tracefs", False, f"Mount tracefs: mount -t tracefs nodev {TRACEFS}.")


def check_headers(modules: Path = Path("/lib/modules"), src: Path = Path("/usr/src")) -> Result:
    build = modules / platform.release() / "build"
    if not (build / "include").exists():
        arch = sorted(src.glob("linux-headers-*-amd64"))
        common = sorted(src.glob("linux-headers-*-common"))
        if arch:
            build.parent.mkdir(parents=True, exist_ok=True)
            for link, target in (
                (build, arch[-1]),
                (build.parent / "source", (common or arch)[-1]),
            ):
                link.unlink(missing_ok=True)
                link.symlink_to(target)
    if (build / "include").exists():
        return Result("kernel headers", True, f"{build} -> {build.resolve()}")
    return Result(
        "kernel headers", False, "Install kernel headers: apt-get install linux-headers-amd64."
    )


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
        return Result("kallsyms", False, f"{exc} (the capability probe needs real addresses).")
    return Result("kallsyms", True, f"{len(ranges)} memory-accounting text ranges")


def self_test() -> list[Result]:
    """Load the trivial program (one compile) and compare what it reads with /proc."""
    bcc = import_bcc()
    flags = [*btf.defines(OFFSETS), f"-DTARGET_TGID={os.getpid()}"]
    try:
        bpf = bcc.BPF(text=SELF_TEST.encode(), cflags=flags)
        bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_sys_enter")
    except Exception as exc:  # bcc raises bare Exception on compile, load and attach errors
        fix = "Check the kernel headers link and that the kernel allows BPF (not locked down)."
        return [Result("program load", False, f"Loading a trivial program failed ({exc}). {fix}")]
    try:
        os.getppid()
        seen = bpf[b"seen"]
        got = [int(seen[seen.Key(i)].value) for i in range(3)]
    finally:
        bpf.cleanup()
    want = [1, os.getppid(), os.stat("/proc/self/ns/mnt").st_ino]
    load = Result("program load", True, "raw tracepoint sys_enter loaded and attached")
    if got == want:
        return [load, Result("self-test", True, f"BPF read ppid {got[1]}, mnt ns {got[2]}")]
    detail = f"BPF read (ran, ppid, mntns) {got} but /proc says {want}"
    fix = "the BTF offsets do not fit this kernel; refusing to run (report this kernel version)."
    return [load, Result("self-test", False, f"{detail}: {fix}")]


CHECKS: tuple[Callable[[], Result], ...] = (
    check_privileges,
    check_tracefs,
    check_headers,
    check_btf,
    check_kallsyms,
    check_bcc,
)


def run_checks() -> list[Result]:
    """All checks in order; stops at the first failure, since later ones depend on it."""
    results: list[Result] = []
    for check in CHECKS:
        results.append(check())
        if not results[-1].ok:
            return results
    return results + self_test()
