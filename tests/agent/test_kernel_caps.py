"""Capability checks that are not uses of a capability stay out: the kernel's memory-overcommit
accounting asks cap_capable(CAP_SYS_ADMIN) on every brk, mmap, mprotect, mremap, fork, execve and
tmpfs page of a root task, which used to report CAP_SYS_ADMIN for every privileged container.
Genuine checks (a mount namespace, a chown) are still reported. The kernel tests need root and
BCC (skipped with the reason otherwise); the kallsyms parsing behind them is tested on fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.localpod import local_pod
from agent.probes.loader import KallsymsError, function_ranges, vm_acct_define
from agent.record import Session

# Every path that measurably reaches security_vm_enough_memory_mm on 6.18: brk and anonymous
# mmap (allocations), MAP_SHARED|MAP_ANONYMOUS and memfd writes (shmem), mprotect and mremap of
# accounted mappings, a writable private file mapping, fork (dup_mmap) and exec (ELF load).
MEMORY = r"""
import ctypes, mmap, os, subprocess, sys
blocks = [bytearray(1 << 20) for _ in range(64)]
shared = mmap.mmap(-1, 1 << 22); shared.write(b"x" * (1 << 22))
fd = os.memfd_create("t"); os.write(fd, b"y" * (1 << 22))
with open(sys.executable, "rb") as f:
    private = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=3)
libc = ctypes.CDLL(None)
libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
ro = libc.mmap(None, 1 << 20, 1, 0x22, -1, 0)
assert libc.mprotect(ro, 1 << 20, 3) == 0
rw = libc.mmap(None, 1 << 20, 3, 0x22, -1, 0)
assert libc.mremap(rw, 1 << 20, 8 << 20, 1) not in (None, 2**64 - 1)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
subprocess.run(["/bin/true"], check=True)
print("done")
"""


def _capabilities(probes: Session, argv: Sequence[str], pod_name: str) -> set[tuple[str, bool]]:
    """(capability, allowed) checks reported for `argv` run alone in a fresh local pod."""
    with local_pod("test", pod_name) as pod:
        probes.control.track(pod.cgroup_id)
        proc = pod.spawn(argv, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert probes.collector.wait_for(
            lambda c: any(e.pid == proc.pid for e in c.events(pod.cgroup_id, "process_exit")),
            timeout=10,
        )
        found = {
            (e.capability_use.capability_name, e.capability_use.allowed)
            for e in probes.collector.events(pod.cgroup_id, "capability_use")
        }
        probes.control.forget(pod.cgroup_id)
    return found


@pytest.mark.ebpf
def test_memory_syscalls_of_root_are_not_cap_sys_admin(probes: Session) -> None:
    assert os.geteuid() == 0
    caps = _capabilities(probes, [sys.executable, "-c", MEMORY], "caps-memory")
    assert not {c for c in caps if c[0] == "CAP_SYS_ADMIN"}, caps


@pytest.mark.ebpf
def test_memory_syscalls_of_non_root_are_not_a_denied_cap_sys_admin(probes: Session) -> None:
    python, setpriv = Path("/usr/bin/python3"), shutil.which("setpriv")
    if not python.exists() or setpriv is None:
        pytest.skip("needs /usr/bin/python3 and setpriv to run as nobody")
    argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", str(python)]
    caps = _capabilities(probes, [*argv, "-c", MEMORY], "caps-nobody")
    assert not {c for c in caps if c[0] == "CAP_SYS_ADMIN"}, caps


@pytest.mark.ebpf
def test_new_mount_namespace_is_cap_sys_admin(probes: Session) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux)")
    caps = _capabilities(probes, [unshare, "-m", "true"], "caps-unshare")
    assert ("CAP_SYS_ADMIN", True) in caps


@pytest.mark.ebpf
def test_chown_is_still_cap_chown(probes: Session, tmp_path: Path) -> None:
    target = tmp_path / "owned"
    target.touch()
    caps = _capabilities(probes, ["/bin/chown", "1", str(target)], "caps-chown")
    assert ("CAP_CHOWN", True) in caps


KALLSYMS = """\
ffffffff81abd6b0 T cap_capable
ffffffff81abd8c0 T cap_vm_enough_memory
ffffffff81abd8f0 t cap_mmap_addr
ffffffff81ac2910 T security_vm_enough_memory_mm
ffffffff81ac2990 T security_mmap_file
ffffffff8121292e t security_vm_enough_memory_mm.cold
ffffffff81212940 t other
ffffffffc0001000 t security_vm_enough_memory_mm\t[some_module]
"""


def test_function_ranges_end_at_the_next_symbol_and_include_clones(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(KALLSYMS)
    names = ("security_vm_enough_memory_mm", "cap_vm_enough_memory", "absent")
    assert function_ranges(names, kallsyms) == [
        (0xFFFFFFFF8121292E, 0xFFFFFFFF81212940),
        (0xFFFFFFFF81AC2910, 0xFFFFFFFF81AC2990),
        (0xFFFFFFFF81ABD8C0, 0xFFFFFFFF81ABD8F0),
    ]
    define = vm_acct_define(kallsyms)
    assert define.startswith("-DVM_ACCT_CALLER(a)=(")
    assert "((a)>=0xffffffff81ac2910ULL&&(a)<0xffffffff81ac2990ULL)" in define


def test_function_ranges_refuse_hidden_or_missing_functions(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("0000000000000000 T security_vm_enough_memory_mm\n0000000000000000 T x\n")
    with pytest.raises(KallsymsError, match="hides addresses"):
        function_ranges(("security_vm_enough_memory_mm",), kallsyms)
    kallsyms.write_text("ffffffff81abd6b0 T cap_capable\n")
    with pytest.raises(KallsymsError, match="no function"):
        function_ranges(("security_vm_enough_memory_mm",), kallsyms)
