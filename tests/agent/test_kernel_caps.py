"""Capability checks that are not uses of a capability stay out: the kernel's memory-overcommit
accounting asks cap_capable(CAP_SYS_ADMIN) on every brk, mmap, mprotect, mremap, fork, execve and
tmpfs page of a root task, which used to report CAP_SYS_ADMIN for every privileged container.
Genuine checks (a mount namespace, a chown) are still reported. Checks made before a new cgroup's
first exec (the launcher's setns into the pod's network namespace, as a container runtime's set-up)
are tagged runtime_startup, never those of a cgroup that ran before the agent or of a sub-cgroup
of a cgroup that exec'd. The kernel tests need root and BCC (skipped with the reason otherwise);
the kallsyms parsing behind them is tested on fixtures."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from parallax.runtime.v1 import event_pb2 as pb

from agent.attribution import paths
from agent.compact import to_event
from agent.localpod import LocalPod, cgroup2_mount, local_pod
from agent.probes.consumer import Collector, Consumer
from agent.probes.control import Control
from agent.probes.loader import (
    Group,
    KallsymsError,
    Loader,
    function_ranges,
    vm_acct_define,
)
from agent.probes.source import KernelSource
from agent.record import Session
from tests.agent.conftest import ebpf_unavailable, probes_with_a_full_map

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


# (capability name, allowed, runtime_startup)
Check = tuple[str, bool, bool]


def _checks(events: Sequence[pb.Event], cgroup_id: int) -> set[Check]:
    return {
        (u.capability_name, u.allowed, u.runtime_startup)
        for u in (e.capability_use for e in events if e.cgroup_id == cgroup_id)
        if u.capability_name
    }


def _chown_in_netns(pod: LocalPod, target: Path) -> int:
    """Run /bin/chown in `pod`, which joins the pod's network namespace before its exec (the
    launcher's setns, a CAP_SYS_ADMIN check); its pid once it exited."""
    proc = pod.spawn(["/bin/chown", "1", str(target)], stdout=subprocess.DEVNULL)
    assert proc.wait(30) == 0
    return proc.pid


@pytest.mark.ebpf
def test_launcher_checks_before_the_exec_are_runtime_startup(
    probes: Session, tmp_path: Path
) -> None:
    """A pod tracked as just made (the recorder's way): the setns before the exec is the
    launcher's, the chown after it the workload's."""
    target = tmp_path / "owned"
    target.touch()
    with local_pod("test", "caps-startup", netns=True) as pod:
        probes.control.track(pod.cgroup_id, running=False)
        pid = _chown_in_netns(pod, target)
        assert probes.collector.wait_for(
            lambda c: any(e.pid == pid for e in c.events(pod.cgroup_id, "process_exit")),
            timeout=10,
        )
        checks = _checks(probes.collector.events(pod.cgroup_id), pod.cgroup_id)
        probes.control.forget(pod.cgroup_id)
    assert ("CAP_SYS_ADMIN", True, True) in checks
    assert ("CAP_CHOWN", True, False) in checks
    assert ("CAP_SYS_ADMIN", True, False) not in checks, checks
    assert ("CAP_CHOWN", True, True) not in checks, checks


@pytest.fixture(scope="module")
def running_pod() -> Iterator[LocalPod]:
    """A local pod (with a network namespace) made before the agent's source starts."""
    with local_pod("test", "caps-before-agent", netns=True) as pod:
        yield pod


@pytest.fixture(scope="module")
def pod_slice() -> Iterator[Path]:
    """A Kubernetes pod's cgroup (cgroupfs layout, below a `kubepods` segment of our own) made
    before the agent's source starts, with no container yet."""
    root = cgroup2_mount() / f"pxtest-{uuid.uuid4().hex[:8]}-kubepods"
    pod = root / f"pod{uuid.uuid4()}"
    pod.mkdir(parents=True)
    try:
        yield pod
    finally:
        for directory in (pod, root):
            with contextlib.suppress(OSError):
                directory.rmdir()


@pytest.fixture(scope="module")
def source(running_pod: LocalPod, pod_slice: Path) -> Iterator[KernelSource]:
    """The agent's KernelSource, started after `running_pod` and `pod_slice` were made: it finds
    them at start (as the agent's walk does), and tracks later local pods and containers from
    their mkdir (the /parallax/ prefix, the `kubepods` rule)."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    root = cgroup2_mount()
    existing = [(c.stat().st_ino, "/" + str(c.relative_to(root))) for c in (pod_slice,)]
    kernel = KernelSource(
        root,
        [(running_pod.cgroup_id, running_pod.cgroup_path), *existing],
        lambda path: paths.parse(path) is not None,
        learn_new=False,
        report_every=3600,
    )
    yield kernel
    kernel.close()


def _read_exit(source: KernelSource, pid: int, timeout: float = 20) -> list[pb.Event]:
    """Events the source reads until process `pid` exits (compact records as Event messages)."""
    deadline, events = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        found = [to_event(e) if isinstance(e, tuple) else e for e in source.read(0.1).events]
        events.extend(found)
        if any(e.pid == pid and e.WhichOneof("payload") == "process_exit" for e in found):
            return events
    raise TimeoutError(f"the exit of process {pid} did not arrive in time")


@pytest.mark.ebpf
def test_agent_tags_start_up_checks_of_a_new_pod(source: KernelSource, tmp_path: Path) -> None:
    target = tmp_path / "owned"
    target.touch()
    with local_pod("test", "caps-new-pod", netns=True) as pod:
        checks = _checks(_read_exit(source, _chown_in_netns(pod, target)), pod.cgroup_id)
    assert ("CAP_SYS_ADMIN", True, True) in checks
    assert ("CAP_CHOWN", True, False) in checks
    assert not {c for c in checks if c[0] == "CAP_SYS_ADMIN" and not c[2]}, checks


@pytest.mark.ebpf
def test_pod_running_before_the_agent_is_never_start_up(
    source: KernelSource, running_pod: LocalPod, tmp_path: Path
) -> None:
    """Its first exec may have come before the agent: every check is the workload's, even a
    launcher's setns before an exec (the safe side: hardening keeps the capability)."""
    target = tmp_path / "owned"
    target.touch()
    checks = _checks(
        _read_exit(source, _chown_in_netns(running_pod, target)), running_pod.cgroup_id
    )
    assert ("CAP_SYS_ADMIN", True, False) in checks
    assert ("CAP_CHOWN", True, False) in checks
    assert not {c for c in checks if c[2]}, checks


@pytest.mark.ebpf
def test_new_container_of_a_pod_found_at_start_is_start_up_until_its_exec(
    source: KernelSource, pod_slice: Path, tmp_path: Path
) -> None:
    """The pod's cgroup was there before the agent but runs nothing itself: a container made in
    it later (a restart) inherits no exec from it. Its launcher's setgroups before the exec is
    start-up, the chown after it the workload's."""
    target = tmp_path / "owned"
    target.touch()
    container = pod_slice / uuid.uuid4().hex.ljust(64, "0")
    container.mkdir()
    try:
        procs = os.open(container / "cgroup.procs", os.O_WRONLY)

        def launch() -> None:
            os.write(procs, b"0")
            os.setgroups(os.getgroups())  # a CAP_SETGID check in the container, before the exec

        try:
            argv = ["/bin/chown", "1", str(target)]
            proc = subprocess.Popen(argv, preexec_fn=launch)  # noqa: PLW1509
        finally:
            os.close(procs)
        assert proc.wait(30) == 0
        checks = _checks(_read_exit(source, proc.pid), container.stat().st_ino)
    finally:
        for _ in range(1000):  # the exited task may still be being reaped
            try:
                container.rmdir()
                break
            except OSError:
                os.sched_yield()
    assert ("CAP_SETGID", True, True) in checks
    assert ("CAP_CHOWN", True, False) in checks
    assert not {c for c in checks if c[0] == "CAP_CHOWN" and c[2]}, checks


NESTED = """
import os, sys
sub = sys.argv[1]
os.mkdir(sub)
with open(os.path.join(sub, "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
os.chown(sys.argv[2], 1, -1)
print(os.stat(sub).st_ino)
"""


@pytest.mark.ebpf
def test_sub_cgroup_of_a_started_pod_is_not_start_up(source: KernelSource, tmp_path: Path) -> None:
    """A workload that moves itself into a sub-cgroup of its own (as systemd does into
    init.scope) and goes on without an exec: the sub-cgroup, tracked from its mkdir, inherits
    its parent's exec."""
    target = tmp_path / "owned"
    target.touch()
    with local_pod("test", "caps-nested") as pod:
        sub = pod.cgroup / "sub"
        try:
            proc = pod.spawn(
                [sys.executable, "-c", NESTED, str(sub), str(target)], stdout=subprocess.PIPE
            )
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            events = _read_exit(source, proc.pid)
        finally:
            with contextlib.suppress(FileNotFoundError):
                sub.rmdir()
    checks = _checks(events, int(out))
    assert ("CAP_CHOWN", True, False) in checks
    assert not {c for c in checks if c[2]}, checks


@pytest.mark.ebpf
def test_exec_marks_a_full_map_cannot_keep_fail_safe(tmp_path: Path) -> None:
    """With no room for a cgroup's first-exec mark, its checks after the exec count as the
    workload's (never as start-up, which would let hardening drop them), and each mark lost,
    in the kernel or from user space, is counted."""
    text = probes_with_a_full_map("exec_seen", "u64", "u8")  # room for one cgroup
    target = tmp_path / "owned"
    target.touch()
    loader = Loader(cgroup2_mount(), text=text)
    collector = Collector()
    consumer = Consumer(loader, collector)
    try:
        control = Control(loader)
        for group in (Group.PROCESS, Group.CAPS):
            loader.attach(group)
        consumer.start()
        with (
            local_pod("test", "caps-full-1") as filler,
            local_pod("test", "caps-full-2", netns=True) as pod,
            local_pod("test", "caps-full-3") as late,
        ):
            control.track(filler.cgroup_id)  # takes the only room
            control.track(pod.cgroup_id, running=False)
            pid = _chown_in_netns(pod, target)
            assert collector.wait_for(
                lambda c: any(e.pid == pid for e in c.events(pod.cgroup_id, "process_exit")),
                timeout=10,
            )
            control.track(late.cgroup_id)  # its mark cannot be stored from user space either
            checks = _checks(collector.events(pod.cgroup_id), pod.cgroup_id)
            losses = control.losses()
    finally:
        consumer.close()
        loader.close()
    assert ("CAP_SYS_ADMIN", True, True) in checks  # before the exec, nothing was lost yet
    assert ("CAP_CHOWN", True, False) in checks
    assert ("CAP_CHOWN", True, True) not in checks
    assert losses.unmarked == 2


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
