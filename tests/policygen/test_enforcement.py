"""Real enforcement: a small C program is recorded (`parallax record`'s eBPF recorder, or strace
where eBPF cannot run),
its profile is generated from the recording and loaded with libseccomp as a runtime would; it
runs to success, the same program on a path needing one more syscall is refused and verification
names that syscall, and the negative control proves an unlisted syscall is refused."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.policygen import seccomp, syscalls
from services.policygen import verify_seccomp as vs
from services.policygen.domain import Profile, ProfileState, Syscall, WorkloadId
from tests.agent.conftest import ebpf_unavailable

pytestmark = pytest.mark.skipif(
    not (shutil.which("cc") and shutil.which("strace")), reason="needs a C compiler and strace"
)

PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
int main(int argc, char **argv) {
    struct utsname u;
    if (uname(&u) != 0) { perror("uname"); return 2; }
    printf("kernel %s\n", u.sysname);
    if (argc > 1 && strcmp(argv[1], "--uptime") == 0) {
        struct sysinfo s;
        if (sysinfo(&s) != 0) { perror("sysinfo"); return 3; }
        printf("uptime %ld\n", s.uptime);
    }
    return 0;
}
"""
_TRACE_LINE = re.compile(r"^\d+\s+\[\s*(\d+)\]")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("prog")
    (directory / "uptime.c").write_text(PROGRAM)
    binary = directory / "uptime"
    subprocess.run(
        ["cc", "-O1", "-o", str(binary), str(directory / "uptime.c")], check=True, timeout=60
    )
    return binary


def record(argv: list[str], log: Path) -> Profile:
    """Record the syscalls of `argv` into a COMPLETE profile: with `parallax record`'s eBPF
    recorder where eBPF runs (root, BCC), else with strace (numbers in the node's table)."""
    arch = syscalls.native_arch()
    if not ebpf_unavailable():
        from agent import record as recorder

        recorded = recorder.record(argv, timeout=60)
        assert recorded.exit_code == 0 and recorded.syscalls
        numbers = {syscalls.number_of(arch, name) for name in recorded.syscalls}
        return Profile(
            workload=WorkloadId("demo", "Job", "uptime", "main"),
            state=ProfileState.COMPLETE,
            arch=arch,
            syscalls=tuple(Syscall("", n, arch) for n in sorted(numbers)),
        )
    subprocess.run(
        ["strace", "-f", "-qq", "-n", "-o", str(log), *argv],
        check=True,
        timeout=60,
        capture_output=True,
    )
    numbers = {int(m[1]) for line in log.read_text().splitlines() if (m := _TRACE_LINE.match(line))}
    return Profile(
        workload=WorkloadId("demo", "Job", "uptime", "main"),
        state=ProfileState.COMPLETE,
        arch=arch,
        syscalls=tuple(Syscall("", n, arch) for n in sorted(numbers)),
    )


@pytest.fixture(scope="module")
def profile_json(program: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    profile = record([str(program)], tmp_path_factory.mktemp("rec") / "trace.log")
    return seccomp.generate(profile, seccomp.SeccompOptions()).oci_json()


def test_recorded_program_runs_under_its_profile(program: Path, profile_json: str) -> None:
    result = vs.verify(vs.VerifyRequest(profile_json, (str(program),), timeout=20))
    assert result.passed, result.failure_reason
    assert result.run.exit_status == 0 and b"kernel Linux" in result.run.stdout
    assert result.negative.syscall == "unshare"
    assert result.negative.refused and result.negative.errno == 1
    assert result.traced and not result.denied


def test_extra_syscall_is_refused_and_named(program: Path, profile_json: str) -> None:
    result = vs.verify(vs.VerifyRequest(profile_json, (str(program), "--uptime"), timeout=20))
    assert not result.passed
    assert result.run.exit_status == 3
    assert b"Operation not permitted" in result.run.stderr
    # perror() dups stderr, a path the recorded run never took: named as well.
    assert {d.name for d in result.denied} <= {"sysinfo", "dup"}
    (denial,) = [d for d in result.denied if d.name == "sysinfo"]
    assert (
        denial.number == syscalls.number_of("SCMP_ARCH_X86_64", "sysinfo")
        or denial.arch != "SCMP_ARCH_X86_64"
    )
    assert denial.executable == str(program) and denial.count == 1
    assert "sysinfo" in result.failure_reason


def test_audit_variant_does_not_refuse_the_negative_control(
    program: Path, profile_json: str
) -> None:
    audit = dict(json.loads(profile_json), defaultAction="SCMP_ACT_LOG")
    audit.pop("defaultErrnoRet")
    text = json.dumps(audit)
    result = vs.verify(vs.VerifyRequest(text, (str(program), "--uptime"), timeout=20))
    assert result.run.exit_status == 0
    assert not result.negative.refused and not result.passed
    # The logging run still names what falls to the default action, which an audit rollout logs.
    assert "sysinfo" in {d.name for d in result.denied}


def test_timeout_kills_the_command() -> None:
    audit = {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}
    result = vs.verify(vs.VerifyRequest(json.dumps(audit), ("sleep", "30"), timeout=0.5))
    assert result.run.timed_out and not result.passed
    assert result.run.elapsed < 10
    assert "timeout" in result.failure_reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"syscalls": []}', "defaultAction"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]}', "architecture"),
    ],
    ids=["not-json", "no-default", "bad-arch"],
)
def test_bad_profiles_are_invalid_arguments(text: str, message: str) -> None:
    with pytest.raises(vs.InvalidArgument, match=message):
        vs.verify(vs.VerifyRequest(text, ("true",)))


def test_unlisted_negative_control_is_chosen(profile_json: str) -> None:
    doc = json.loads(profile_json)
    doc["syscalls"][0]["names"].append("unshare")
    result = vs.verify(vs.VerifyRequest(json.dumps(doc), ("true",), timeout=10))
    assert result.negative.syscall == "setns" and result.negative.refused
    assert dataclasses.is_dataclass(result)
