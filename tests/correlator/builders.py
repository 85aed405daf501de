"""Test support: domain findings, profiles, mounts and alerts of a small shop workload, so each
correlator test states only what matters to it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.correlator.domain import (
    Alert,
    Capability,
    Executable,
    FileOpen,
    Finding,
    Mount,
    Peer,
    Profile,
    ProfileState,
    Severity,
    UserId,
    Workload,
)

CART = Workload("shop", "Deployment", "cart")
T0 = 1_790_000_000.0


def finding(control: str, message: str = "container 'cart' x", **extra: Any) -> Finding:
    base = Finding(
        name=f"scans/s1/findings/{control}",
        control_id=control,
        title=control,
        severity=Severity.HIGH,
        workload=CART,
        field_path=extra.pop("field_path", "spec.template.spec"),
        message=message,
    )
    return replace(base, **extra)


def profile(state: ProfileState = ProfileState.COMPLETE, **items: Any) -> Profile:
    return Profile(
        name="workloads/shop/Deployment/cart/containers/cart/profiles/sha256:aa",
        workload=CART,
        container="cart",
        image="shop/cart:1",
        digest="sha256:aa",
        state=state,
        state_reason=f"{state.name}: test",
        **items,
    )


def cap(name: str, allowed: int = 3) -> Capability:
    return Capability(name, allowed, 0, T0)


def opened(pattern: str, writes: bool = False, exe: str = "/app/server") -> FileOpen:
    return FileOpen(pattern, writes, (exe,), T0)


def peer(address: str, port: int, inbound: bool = False) -> Peer:
    return Peer(address, port, inbound, (), T0)


def uid(real: int, effective: int, exe: str = "/app/server") -> UserId:
    return UserId(real, effective, (exe,), T0)


def exe(path: str) -> Executable:
    return Executable(path, (path,), (), T0)


def mount(source: str, path: str, index: int, host: str = "", read_only: bool = False) -> Mount:
    return Mount("cart", f"v{index}", source, path, read_only, host, index)


def alert(rule: str, **evidence: str) -> Alert:
    return Alert(
        name=f"alerts/{rule.lower()}",
        rule_id=rule,
        title={"R0002": "Shell spawned in a container"}.get(rule, rule),
        severity=Severity.MEDIUM,
        message=f"{rule} fired in shop/cart",
        workload=CART,
        container="cart",
        evidence=tuple(sorted(evidence.items())),
        mitre="T1059.004",
        last_seen=T0,
    )
