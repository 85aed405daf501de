"""Reads an `strace -f -n` log of a run under the distinctive-errno variant of a profile and
names the denied syscalls, with the executable that made each call and how often. Pure: the
log comes in as text from verify_seccomp.py."""

from __future__ import annotations

import errno
import re
from collections import Counter
from dataclasses import dataclass

from services.policygen import syscalls

# The errno the logging variant answers with instead of EPERM: no syscall returns it by itself
# (it means a radio is blocked by rfkill), so each line ending in it is a denial.
DENIAL_ERRNO = errno.ERFKILL
_LINE = re.compile(
    r"^(?P<pid>\d+)\s+\[\s*(?P<nr>\d+)\]\s+"
    r"(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<name>\w+)\((?P<args>.*?))"
    r".*\)\s+= (?P<ret>-?\d+|\?)(?: (?P<err>E[A-Z0-9]+))?"
)
_EXEC_PATH = re.compile(r'execve\("(?P<path>[^"]*)"')
_FORKS = {"clone", "clone3", "fork", "vfork"}


@dataclass(frozen=True)
class Denial:
    """A syscall the profile refused, by name and number in `arch`'s table."""

    name: str
    number: int
    arch: str
    executable: str
    count: int


def parse(log: str, arch: str, first_executable: str) -> tuple[Denial, ...]:
    """Return the denials in `log`, ordered by name then executable."""
    denial_name = errno.errorcode[DENIAL_ERRNO]
    executables: dict[str, str] = {}
    pending_exec: dict[str, str] = {}
    counts: Counter[tuple[str, int, str]] = Counter()
    for line in log.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        pid, number = match["pid"], int(match["nr"])
        name = match["name"] or match["resumed"] or ""
        exec_path = _EXEC_PATH.search(line)
        if exec_path:
            pending_exec[pid] = exec_path["path"]
        current = executables.get(pid, first_executable)
        if match["err"] == denial_name:
            counts[(_libseccomp_name(arch, number, name), number, current)] += 1
        elif name == "execve" and match["ret"] == "0":
            executables[pid] = pending_exec.get(pid, current)
        elif name in _FORKS and match["ret"] not in ("?", None) and int(match["ret"]) > 0:
            executables[match["ret"]] = current
    return tuple(
        Denial(name, number, arch, exe, count)
        for (name, number, exe), count in sorted(counts.items())
    )


def _libseccomp_name(arch: str, number: int, traced: str) -> str:
    try:
        return syscalls.name_of(arch, number)
    except syscalls.UnknownSyscall:
        return traced
