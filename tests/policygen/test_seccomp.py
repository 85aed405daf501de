"""Seccomp generation: golden OCI and SPO renderings of the recorded cart profile, names from
libseccomp's table (never "unknown"), architectures, the runtime base set, the lint of dangerous
allowances, the RuntimeDefault verdict and readiness."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from services.policygen import seccomp, seccomp_rules, syscalls
from services.policygen.domain import Profile, ProfileState, Readiness, Syscall, WorkloadId


def test_oci_and_spo_match_the_golden_files(
    cart: Profile, golden: Callable[[str, str], None]
) -> None:
    generated = seccomp.generate(cart, seccomp.SeccompOptions())
    golden("cart.seccomp.json", generated.oci_json())
    golden("cart.seccompprofile.yaml", generated.spo_yaml())
    audit = seccomp.generate(cart, seccomp.SeccompOptions(audit=True))
    golden("cart.seccomp-audit.json", audit.oci_json())


def test_names_come_from_libseccomp_and_never_unknown(cart: Profile) -> None:
    generated = seccomp.generate(cart, seccomp.SeccompOptions())
    names = generated.syscall_names
    assert "unknown" not in names and "" not in names
    assert "getpid" in names  # a nameless entry resolved from its number
    assert list(names) == sorted(set(names))
    assert all(syscalls.is_known(n, ("SCMP_ARCH_X86_64",)) for n in names)


def test_enforcing_and_audit_defaults(cart: Profile) -> None:
    enforcing = seccomp.generate(cart, seccomp.SeccompOptions()).oci
    assert enforcing["defaultAction"] == "SCMP_ACT_ERRNO" and enforcing["defaultErrnoRet"] == 1
    audit = seccomp.generate(cart, seccomp.SeccompOptions(audit=True)).oci
    assert audit["defaultAction"] == "SCMP_ACT_LOG" and "defaultErrnoRet" not in audit


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("SCMP_ARCH_X86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("SCMP_ARCH_AARCH64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ],
    ids=["x86_64", "arm64"],
)
def test_architectures_follow_the_node(cart: Profile, arch: str, expected: list[str]) -> None:
    profile = dataclasses.replace(cart, arch=arch)
    assert seccomp.generate(profile, seccomp.SeccompOptions()).oci["architectures"] == expected


def test_runtime_base_profile_is_unioned(cart: Profile) -> None:
    plain = set(seccomp.generate(cart, seccomp.SeccompOptions()).syscall_names)
    based = seccomp.generate(cart, seccomp.SeccompOptions(include_runtime_base=True))
    assert set(based.syscall_names) == plain | seccomp_rules.RUNTIME_BASE
    assert list(based.syscall_names) == sorted(based.syscall_names)


@pytest.mark.parametrize(
    ("name", "rule", "severity"),
    [
        ("init_module", "SCX-001", "CRITICAL"),
        ("kexec_load", "SCX-002", "CRITICAL"),
        ("mount", "SCX-003", "HIGH"),
        ("umount2", "SCX-003", "HIGH"),
        ("unshare", "SCX-004", "HIGH"),
        ("setns", "SCX-004", "HIGH"),
        ("ptrace", "SCX-005", "HIGH"),
        ("process_vm_writev", "SCX-005", "HIGH"),
        ("bpf", "SCX-006", "HIGH"),
        ("keyctl", "SCX-007", "MEDIUM"),
        ("add_key", "SCX-007", "MEDIUM"),
        ("open_by_handle_at", "SCX-008", "HIGH"),
        ("userfaultfd", "SCX-009", "MEDIUM"),
    ],
    ids=str,
)
def test_lint_flags_dangerous_allowances(name: str, rule: str, severity: str) -> None:
    (finding,) = seccomp.lint(("read", name, "write"))
    assert (finding.syscall, finding.rule_id, finding.severity) == (name, rule, severity)
    assert finding.reason


def test_lint_rule_ids_are_unique_and_names_are_real_syscalls() -> None:
    ids = [r.rule_id for r in seccomp_rules.DANGEROUS]
    assert len(ids) == len(set(ids))
    arches = syscalls.with_compat("SCMP_ARCH_X86_64")
    for name in seccomp_rules.dangerous_index():
        assert syscalls.is_known(name, arches), name
    for name in (*seccomp_rules.RUNTIME_DEFAULT_BLOCKED, *seccomp_rules.RUNTIME_BASE):
        assert syscalls.is_known(name, arches), name


def test_runtime_default_verdict() -> None:
    safe = seccomp.runtime_default_verdict(("read", "write", "futex"))
    assert safe.safe and not safe.blocked
    unsafe = seccomp.runtime_default_verdict(("mount", "read", "unshare"))
    assert not unsafe.safe and unsafe.blocked == ("mount", "unshare")
    assert "CAP_SYS_ADMIN" in unsafe.reason


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (ProfileState.LEARNING, "LEARNING: 2h of 24h", Readiness.INSUFFICIENT_EVIDENCE),
        (ProfileState.PARTIAL, "PARTIAL: start not observed", Readiness.INSUFFICIENT_EVIDENCE),
        (ProfileState.COMPLETE, "", Readiness.UNVERIFIED),
    ],
    ids=["learning", "partial", "complete"],
)
def test_readiness(cart: Profile, state: ProfileState, reason: str, expected: Readiness) -> None:
    profile = dataclasses.replace(cart, state=state, state_reason=reason)
    generated = seccomp.generate(profile, seccomp.SeccompOptions())
    assert generated.readiness is expected
    assert reason in generated.readiness_reason


def test_a_syscall_libseccomp_cannot_name_is_left_out() -> None:
    profile = Profile(
        workload=WorkloadId("shop", "Deployment", "cart", "server"),
        state=ProfileState.COMPLETE,
        syscalls=(Syscall("", 999999, "SCMP_ARCH_X86_64"), Syscall("nosuch"), Syscall("read")),
    )
    generated = seccomp.generate(profile, seccomp.SeccompOptions())
    assert generated.syscall_names == ("read",)
    assert json.loads(generated.oci_json())["syscalls"][0]["names"] == ["read"]


def test_a_profile_without_syscalls_is_never_ready_or_runtime_default_safe(cart: Profile) -> None:
    """A COMPLETE profile of a workload never opted in to learning holds no syscall: a profile
    generated from it would deny everything the workload does."""
    empty = dataclasses.replace(cart, syscalls=())
    generated = seccomp.generate(empty, seccomp.SeccompOptions())
    assert generated.readiness is Readiness.INSUFFICIENT_EVIDENCE
    assert "no syscall was recorded" in generated.readiness_reason
    assert not generated.runtime_default.safe
