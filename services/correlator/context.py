"""A workload's exposure and service-account power, derived from its posture findings (NET-04
paths, SA-0x joins of the mounted token to RBAC) and its profiles (inbound flows from outside
the cluster, token reads). Pure; used by risk scoring, incidents and GetWorkloadContext."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.correlator.domain import Finding, Profile, Severity
from services.correlator.evidence import TOKEN_DIRS

_SERVICE_ACCOUNT = re.compile(r"ServiceAccount '([^']+)'|token of '([^']+)'")
# How much API power each workload/ServiceAccount control implies for the mounted token.
POWER = {"SA-04": Severity.CRITICAL, "SA-05": Severity.HIGH, "SA-02": Severity.MEDIUM}
MAX_PERMISSIONS = 20


@dataclass(frozen=True)
class Exposure:
    """Whether anything outside the cluster reaches the workload, and how."""

    exposed: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Access:
    """The API power the workload's service account holds."""

    service_account: str = ""
    token_mounted: bool = False
    token_read: bool = False
    cluster_admin: bool = False
    power: Severity = Severity.UNSPECIFIED
    permissions: tuple[str, ...] = ()
    token_path: str = TOKEN_DIRS[0] + "token"


def is_external(address: str) -> bool:
    """True for a global (public) address: a peer outside any cluster network."""
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def exposure(findings: Sequence[Finding], profiles: Sequence[Profile]) -> Exposure:
    """Exposure from NET-04 findings (Service NodePort/LoadBalancer, Ingress) and inbound flows
    from global addresses."""
    reasons = [f.message for f in findings if f.control_id == "NET-04"]
    for profile in profiles:
        outside = sorted({p.address for p in profile.peers if p.inbound and is_external(p.address)})
        if outside:
            shown = ", ".join(outside[:3])
            reasons.append(f"inbound flows from {shown} (outside the cluster)")
    return Exposure(bool(reasons), tuple(reasons))


def access(findings: Sequence[Finding], profiles: Sequence[Profile], namespace: str) -> Access:
    """Service-account power from the workload's SA-0x findings and token reads in profiles."""
    mounted = [f for f in findings if f.control_id in ("SA-01", *POWER)]
    names = [m for f in mounted for m in _SERVICE_ACCOUNT.findall(f.message)]
    account = next((a or b for a, b in names), "")
    power = max((POWER[f.control_id] for f in findings if f.control_id in POWER), default=None)
    admin = any(f.control_id == "SA-04" and "ClusterRoleBinding/" in f.message for f in findings)
    reads = any(
        f.pattern.startswith(TOKEN_DIRS) and "token" in f.pattern
        for p in profiles
        for f in p.file_opens
    )
    permissions = tuple(
        f.message for f in findings if f.control_id in POWER or f.control_id.startswith("RBAC-")
    )[:MAX_PERMISSIONS]
    return Access(
        service_account=f"{namespace}/{account}" if account else "",
        token_mounted=bool(mounted),
        token_read=reads,
        cluster_admin=admin,
        power=power if power is not None else (Severity.LOW if mounted else Severity.UNSPECIFIED),
        permissions=permissions,
    )
