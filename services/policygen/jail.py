"""The child side of seccomp verification, run as `python -m services.policygen.jail [--parent
PID] PROFILE [--errno N] [--probe SYSCALL] -- CMD...`: it arranges to die with its parent, builds
the filter from the OCI JSON with libseccomp the way runc does, sets no_new_privs, loads the filter
and execs CMD (or, with --probe, makes one syscall and exits with its errno). `--no-filter` in
place of PROFILE only dies with its parent and execs CMD (strace, which then starts the jail).
Only verify_seccomp.py starts it."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
from typing import Any

import pyseccomp

from services.policygen import syscalls

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
EXIT_SETUP, EXIT_EXEC = 125, 127
PROBE_NOT_REFUSED = 254
_OPS = {
    "SCMP_CMP_NE": pyseccomp.NE,
    "SCMP_CMP_LT": pyseccomp.LT,
    "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ,
    "SCMP_CMP_GE": pyseccomp.GE,
    "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}
# Harmless arguments for each negative-control syscall: allowed, each call fails or does nothing.
PROBE_ARGS: dict[str, tuple[int, ...]] = {
    "unshare": (0,),
    "setns": (2**32 - 1, 0),
    "pivot_root": (0, 0),
    "kexec_load": (0, 0, 0, 0),
    "open_by_handle_at": (2**32 - 1, 0, 0),
    "personality": (0xFFFFFFFF,),
}


def action(name: str, errno_ret: int | None) -> int:
    """Map an SCMP_ACT_* name to libseccomp's value (ERRNO defaults to EPERM, as in runc)."""
    simple = {
        "SCMP_ACT_ALLOW": pyseccomp.ALLOW,
        "SCMP_ACT_LOG": pyseccomp.LOG,
        "SCMP_ACT_KILL": pyseccomp.KILL,
        "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS,
        "SCMP_ACT_TRAP": pyseccomp.TRAP,
    }
    if name in simple:
        return int(simple[name])
    if name == "SCMP_ACT_ERRNO":
        return int(pyseccomp.ERRNO(1 if errno_ret is None else errno_ret))
    if name == "SCMP_ACT_TRACE":
        return int(pyseccomp.TRACE(1 if errno_ret is None else errno_ret))
    raise ValueError(f"unsupported seccomp action {name!r}")


def build_filter(doc: dict[str, Any], errno_override: int | None = None) -> pyseccomp.SyscallFilter:
    """Build the filter of an OCI seccomp profile; with `errno_override` the default action
    becomes ERRNO(errno_override) so denials are recognisable in a trace."""
    if errno_override is None:
        default = action(doc["defaultAction"], doc.get("defaultErrnoRet"))
    else:
        default = pyseccomp.ERRNO(errno_override)
    scmp = pyseccomp.SyscallFilter(default)
    for arch in doc.get("architectures") or ():
        arch_token = syscalls.token(arch)
        if not scmp.exist_arch(arch_token):
            scmp.add_arch(arch_token)
    for rule in doc.get("syscalls") or ():
        rule_action = action(rule["action"], rule.get("errnoRet"))
        if rule_action == default:
            continue  # libseccomp refuses rules equal to the default; runc skips them too
        args = [_arg(a) for a in rule.get("args") or ()]
        for name in rule.get("names") or ():
            if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) < 0:
                continue  # unknown on this kernel's table: runc ignores it as well
            scmp.add_rule(rule_action, name, *args)
    return scmp


def _arg(raw: dict[str, Any]) -> pyseccomp.Arg:
    return pyseccomp.Arg(raw["index"], _OPS[raw["op"]], raw["value"], raw.get("valueTwo", 0))


def enter(scmp: pyseccomp.SyscallFilter) -> None:
    """Set no_new_privs, then load the filter into this process, as runc does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    scmp.load()


def probe(name: str) -> dict[str, int]:
    """Make syscall `name` with harmless arguments; return its result and errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    args = [ctypes.c_long(a) for a in PROBE_ARGS.get(name, ())]
    result = libc.syscall(ctypes.c_long(number), *args)
    return {"result": int(result), "errno": ctypes.get_errno() if result == -1 else 0}


def die_with_parent(parent: int) -> None:
    """Be killed when the parent dies (kept across exec, so CMD inherits it); exit at once when
    `parent` (a pid, 0 for any) is already gone. Before the filter, which may refuse prctl."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if parent and os.getppid() != parent:
        os._exit(EXIT_SETUP)  # the parent died before the death signal was armed


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m services.policygen.jail")
    parser.add_argument("profile", nargs="?", help="the OCI seccomp profile (a JSON file)")
    parser.add_argument("--no-filter", action="store_true", help="exec CMD with no filter")
    parser.add_argument("--parent", type=int, default=0, help="the pid whose death ends CMD")
    parser.add_argument("--errno", type=int, help="make the default action ERRNO(N)")
    parser.add_argument("--probe", default="", help="make this syscall instead of exec'ing CMD")
    options = parser.parse_args(argv[:split])
    if bool(options.profile) == options.no_filter:
        parser.error("give either PROFILE or --no-filter")
    return options, argv[split + 1 :]


def main(argv: list[str]) -> int:
    """Parse the helper's command line, arm the death signal, load the filter and exec or
    probe."""
    options, command = _parse(argv)
    try:
        die_with_parent(options.parent)
        if not options.no_filter:
            with open(options.profile, encoding="utf-8") as handle:
                enter(build_filter(json.load(handle), options.errno))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"jail: cannot load the seccomp profile: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if options.probe:
        # Report through the exit status alone: the filter may refuse even write(2).
        outcome = probe(options.probe)
        os._exit(outcome["errno"] if outcome["result"] == -1 else PROBE_NOT_REFUSED)
    try:
        os.execvp(command[0], command)  # noqa: S606 - exec'ing CMD under the filter is the point
    except OSError as exc:
        os.write(2, f"jail: cannot exec {command[0]}: {exc}\n".encode())
    return EXIT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
