"""Nodes with an agent and their blind spots: cumulative drop counters summed over agent
sessions, unattributed event counts, and observation gaps. Pure; the engine applies each batch's
NodeReport and hands the growth of drops and unattributed events to the learning profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.runtime import domain

SILENT_AFTER = 150.0  # agents report at least every minute, idle or not (agent.ship.outbox)
MAX_GAPS = 100
GAP_AGENT_RESTART = 1  # the contract's GapReason
MAX_AGENTS = 16  # agents per node whose sessions are tracked apart

Counts = dict[tuple[int, int], int]


@dataclass
class Node:
    """One node's agent identity, report times and blind spots."""

    node: str
    agent_id: str = ""
    agent_version: str = ""
    kernel_release: str = ""
    arch: int = 0
    session_id: str = ""
    first_report: float = 0.0
    last_report: float = 0.0
    last_sequence: int = 0
    events_received: int = 0
    retired_drops: Counts = field(default_factory=dict)
    session_drops: Counts = field(default_factory=dict)  # the latest batch's agent session's
    unattributed: Counts = field(default_factory=dict)
    gaps: list[domain.Gap] = field(default_factory=list)
    # Other agents on the node (e.g. `parallax record --runtime` next to the node's agent):
    # agent id -> (its session, that session's cumulative drops), so that sessions of two agents
    # taking turns never retire and re-count each other's totals.
    other_sessions: dict[str, tuple[str, Counts]] = field(default_factory=dict)

    def apply(self, batch: domain.Batch, now: float) -> tuple[int, int, tuple[domain.Gap, ...]]:
        """Fold a batch in; return the events newly dropped, the unattributed events and the
        gaps it reported, with one for the time between an agent's sessions (a restart: from its
        previous session's last report to this one's first, nothing was observed)."""
        report = batch.report
        restart: tuple[domain.Gap, ...] = ()
        if (
            report.agent_id == self.agent_id
            and report.session_id != self.session_id
            and self.last_report
        ):
            detail = (
                f"agent {report.agent_id} restarted (session {self.session_id} -> "
                f"{report.session_id}): nothing observed in between"
            )
            restart = (domain.Gap(0, GAP_AGENT_RESTART, self.last_report, now, detail),)
        if report.agent_id != self.agent_id and self.agent_id:
            self.other_sessions[self.agent_id] = (self.session_id, self.session_drops)
            self.session_id, self.session_drops = self.other_sessions.pop(report.agent_id, ("", {}))
            while len(self.other_sessions) > MAX_AGENTS:  # the oldest's totals are kept
                oldest = next(iter(self.other_sessions))
                _add(self.retired_drops, self.other_sessions.pop(oldest)[1])
        if report.session_id != self.session_id:
            _add(self.retired_drops, self.session_drops)
            self.session_drops = {}
            self.session_id = report.session_id
            self.last_sequence = 0
        self.agent_id, self.agent_version = report.agent_id, report.agent_version
        self.kernel_release, self.arch = report.kernel_release, report.arch
        self.first_report = self.first_report or now
        self.last_report = now
        self.last_sequence = max(self.last_sequence, batch.key.sequence)
        self.events_received += batch.event_count
        dropped = 0
        for key, total in report.drops.items():
            before = self.session_drops.get(key, 0)
            if total > before:
                dropped += total - before
                self.session_drops[key] = total
        _add(self.unattributed, report.unattributed)
        gaps = (*report.gaps, *restart)
        self.gaps = sorted([*gaps, *self.gaps], key=lambda g: -g.start)[:MAX_GAPS]
        return dropped, sum(report.unattributed.values()), gaps

    def drops(self) -> Counts:
        """Return events lost per (event type, source), summed over sessions and agents."""
        total = dict(self.retired_drops)
        _add(total, self.session_drops)
        for _, counts in self.other_sessions.values():
            _add(total, counts)
        return total

    def reporting(self, now: float) -> bool:
        """Return True when a batch arrived within SILENT_AFTER seconds."""
        return now - self.last_report <= SILENT_AFTER


def _add(into: Counts, more: Counts) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value
