"""Fixtures for the agent's kernel tests: skip with the reason unless root with BCC, and one
probe session per test module (each compile costs seconds of CPU)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent.probes.loader import BccMissing, import_bcc


def ebpf_unavailable() -> str:
    """Why real eBPF cannot run here, or "" when it can."""
    if os.geteuid() != 0:
        return "real eBPF needs root"
    try:
        import_bcc()
    except BccMissing as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def probes() -> Iterator[object]:
    """A recorder Session with every event group attached (SYSCALLS gated by learning)."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    from agent.record import session

    with session() as s:
        yield s
