"""The one-screen rendering of `parallax context WORKLOAD`: risk and its terms, exposure and
service account, findings with runtime verdicts, profiles, recommendations with verification,
open incidents and vulnerabilities in use."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.correlator import READINESS, REC_STATES, SEVERITIES, VERDICTS

KINDS = {1: "seccomp", 2: "NetworkPolicy", 3: "hardening"}
PROFILE_STATES = {1: "LEARNING", 2: "COMPLETE", 3: "PARTIAL"}


def show_context(console: Console, found: Any) -> None:
    """Print a WorkloadContext."""
    ref, risk = found.workload, found.risk
    console.print(f"[bold]{ref.namespace}/{ref.kind}/{ref.name}[/bold]  risk {risk.score:.1f} "
                  f"({SEVERITIES[risk.severity]}, rank {risk.rank})")  # fmt: skip
    for term in risk.terms:
        console.print(f"  {term.term:24} {term.contribution:6.2f}  {escape(term.explanation)}")
    exposure = "; ".join(found.exposure.reasons) or "not exposed"
    console.print(f"exposure: {escape(exposure)}")
    sa = found.service_account
    if sa.service_account:
        console.print(f"service account {sa.service_account}: power {SEVERITIES[sa.power]}, "
                      f"token mounted {sa.token_mounted}, read {sa.token_read}, "
                      f"cluster-admin {sa.cluster_admin}")  # fmt: skip
    table = Table("severity", "control", "verdict", "why", "closed by")
    for item in found.findings:
        f = item.finding
        table.add_row(SEVERITIES[f.severity], f.control_id, VERDICTS.get(item.verdict, "?"),
                      escape(item.verdict_reason), item.recommendation)  # fmt: skip
    console.print(table)
    for p in found.profiles:
        console.print(f"profile {p.container_name}: {PROFILE_STATES.get(p.state, '?')}, "
                      f"{p.syscall_count} syscalls, {p.executable_count} executables, "
                      f"{p.file_open_count} files, {p.network_peer_count} peers")  # fmt: skip
    for r in found.recommendations:
        review = " [review required]" if r.review_required else ""
        console.print(f"{r.name} {KINDS.get(r.kind, '?')} {REC_STATES.get(r.state, '?')} "
                      f"{READINESS.get(r.readiness_state, '?')}{review}: "
                      f"{escape(r.verification_summary or r.state_reason)}")  # fmt: skip
    for i in found.incidents:
        console.print(f"incident {SEVERITIES[i.severity]} {escape(i.title)}")
    for v in found.vulnerabilities:
        console.print(f"in use: {v.vulnerability_id} {SEVERITIES[v.severity]} {v.package_name}")
    console.print(f"{found.not_in_use_vulnerability_count} vulnerabilities not in use, "
                  f"{found.unknown_vulnerability_count} unknown")  # fmt: skip
