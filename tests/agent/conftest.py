"""Fixtures for the agent's kernel tests: skip with the reason unless root with BCC, and one
probe session per test module (each compile costs seconds of CPU)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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


def started_source(**options: Any) -> Iterator[Any]:
    """A KernelSource on the machine's cgroup v2 hierarchy with no prefixes of its own, closed
    after the module (skipped with the reason where eBPF cannot run); for a module's fixture to
    `yield from`."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    from agent.localpod import cgroup2_mount
    from agent.probes.source import KernelSource

    kernel = KernelSource(cgroup2_mount(), (), lambda _path: False, report_every=3600, **options)
    yield kernel
    kernel.close()


def probes_with_a_full_map(name: str, key: str, value: str) -> str:
    """The probes' C with the 16384-entry BPF_HASH `name` given room for one entry, to see what
    a full map does (skipped with the reason where eBPF cannot run)."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    from agent.probes.loader import source_text

    small = f"BPF_HASH({name}, {key}, {value}, 1);"
    text = source_text().replace(f"BPF_HASH({name}, {key}, {value}, 16384);", small)
    assert small in text
    return text


@pytest.fixture(scope="module")
def probes() -> Iterator[object]:
    """A recorder Session with every event group attached (SYSCALLS gated by learning)."""
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(reason)
    from agent.record import session

    with session() as s:
        yield s
