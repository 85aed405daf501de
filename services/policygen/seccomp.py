"""Seccomp profile generation from a runtime profile: the OCI/Docker JSON runc, crun and the
kubelet load, the same as a Security Profiles Operator SeccompProfile, the lint of dangerous
allowances and the RuntimeDefault verdict. Called by the servicer and `parallax seccomp`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from services.policygen import seccomp_rules, syscalls
from services.policygen.domain import Profile, Readiness, readiness

SPO_API_VERSION = "security-profiles-operator.x-k8s.io/v1"
EPERM = 1


@dataclass(frozen=True)
class SeccompOptions:
    """What to generate: the audit variant, the runtime base set, explicit architectures."""

    audit: bool = False
    include_runtime_base: bool = False
    architectures: tuple[str, ...] = ()
    spo_name: str = ""


@dataclass(frozen=True)
class LintFinding:
    """One dangerous allowance in a generated profile."""

    rule_id: str
    syscall: str
    severity: str
    reason: str
    executables: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeDefaultVerdict:
    """Whether the observed syscalls fit inside RuntimeDefault, and why."""

    safe: bool
    reason: str
    blocked: tuple[str, ...]


@dataclass(frozen=True)
class GeneratedSeccomp:
    """A generated profile in both renderings, with lint and readiness."""

    profile: Profile
    audit: bool
    architectures: tuple[str, ...]
    syscall_names: tuple[str, ...]
    oci: dict[str, Any]
    spo: dict[str, Any]
    lint: tuple[LintFinding, ...]
    runtime_default: RuntimeDefaultVerdict
    readiness: Readiness
    readiness_reason: str

    def oci_json(self) -> str:
        """Return the OCI JSON, indented, keys in the order runtimes document them."""
        return json.dumps(self.oci, indent=2) + "\n"

    def spo_yaml(self) -> str:
        """Return the SPO object as YAML."""
        return yaml.safe_dump(self.spo, sort_keys=False)


def generate(profile: Profile, options: SeccompOptions) -> GeneratedSeccomp:
    """Build the seccomp profile for `profile`'s container."""
    arches = options.architectures or syscalls.with_compat(profile.arch or syscalls.native_arch())
    observed = observed_names(profile, arches)
    names = set(observed)
    if options.include_runtime_base:
        names |= {n for n in seccomp_rules.RUNTIME_BASE if syscalls.is_known(n, arches)}
    allowed = tuple(sorted(names))
    body = _body(allowed, arches, options.audit)
    state, reason = readiness([profile])
    if not observed:  # a profile allowing only a base set would stop the workload at once
        state = Readiness.INSUFFICIENT_EVIDENCE
        reason = (
            "no syscall was recorded for this container (syscalls are recorded only while its "
            "workload is opted in to learning); a profile from it would deny what the workload "
            "needs, review only"
        )
    return GeneratedSeccomp(
        profile=profile,
        audit=options.audit,
        architectures=arches,
        syscall_names=allowed,
        oci=body,
        spo=_spo(profile, options.spo_name, body),
        # Syscalls are not attributed to executables; with a single one there is no doubt.
        lint=lint(allowed, profile.executables if len(profile.executables) == 1 else ()),
        runtime_default=runtime_default_verdict(observed),
        readiness=state,
        readiness_reason=reason,
    )


def observed_names(profile: Profile, arches: tuple[str, ...]) -> tuple[str, ...]:
    """Return the profile's syscalls as libseccomp names, sorted and unique: a name missing or
    "unknown" is resolved from its number; one libseccomp cannot name is left out."""
    names: set[str] = set()
    for call in profile.syscalls:
        name = call.name if call.name and call.name != "unknown" else ""
        if not name and call.arch:
            try:
                name = syscalls.name_of(call.arch, call.number)
            except syscalls.UnknownSyscall:
                continue
        if name and syscalls.is_known(name, arches):
            names.add(name)
    return tuple(sorted(names))


def lint(names: tuple[str, ...], executables: tuple[str, ...] = ()) -> tuple[LintFinding, ...]:
    """Flag the dangerous allowances among `names`, in name order."""
    index = seccomp_rules.dangerous_index()
    return tuple(
        LintFinding(rule.rule_id, name, rule.severity, rule.reason, executables[:16])
        for name in names
        if (rule := index.get(name)) is not None
    )


def runtime_default_verdict(names: tuple[str, ...]) -> RuntimeDefaultVerdict:
    """Say whether RuntimeDefault already allows every observed syscall (no verdict without
    any observed)."""
    if not names:
        return RuntimeDefaultVerdict(
            False, "no syscall was observed: no evidence that RuntimeDefault is safe", ()
        )
    blocked = tuple(n for n in names if n in seccomp_rules.RUNTIME_DEFAULT_BLOCKED)
    if not blocked:
        return RuntimeDefaultVerdict(
            True,
            f"all {len(names)} observed syscalls are allowed by RuntimeDefault; "
            "seccompProfile.type RuntimeDefault will not break the workload",
            (),
        )
    why = "; ".join(f"{n} ({seccomp_rules.RUNTIME_DEFAULT_BLOCKED[n]})" for n in blocked)
    return RuntimeDefaultVerdict(False, f"RuntimeDefault refuses {why}", blocked)


def _body(names: tuple[str, ...], arches: tuple[str, ...], audit: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"defaultAction": "SCMP_ACT_LOG" if audit else "SCMP_ACT_ERRNO"}
    if not audit:
        body["defaultErrnoRet"] = EPERM
    body["architectures"] = list(arches)
    body["syscalls"] = [{"names": list(names), "action": "SCMP_ACT_ALLOW"}] if names else []
    return body


def _spo(profile: Profile, name: str, body: dict[str, Any]) -> dict[str, Any]:
    # SPO's spec has no defaultErrnoRet: its ERRNO default already answers EPERM.
    spec = {k: v for k, v in body.items() if k != "defaultErrnoRet"}
    spec["syscalls"] = [dict(rule) for rule in spec["syscalls"]]
    return {
        "apiVersion": SPO_API_VERSION,
        "kind": "SeccompProfile",
        "metadata": {
            "name": name or spo_name(profile),
            "labels": {"app.kubernetes.io/managed-by": "parallax"},
            "annotations": {"parallax.dev/source-profile": profile.name or "inline"},
        },
        "spec": spec,
    }


def spo_name(profile: Profile) -> str:
    """Derive an SPO object name, for example "shop-cart-server"."""
    workload = profile.workload
    parts = [workload.namespace, workload.name, workload.container]
    raw = "-".join(p for p in parts if p).lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:253] or "parallax-profile"


def localhost_profile(name: str) -> str:
    """Return the kubelet's localhostProfile for an SPO profile named `name`."""
    return f"operator/{name}.json"
