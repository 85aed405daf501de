"""Entering a demo pod, in a process of its own: `python demo_enter.py VIEW_JSON NETNS PROCS --
CMD...` makes a private mount view (the pod's ServiceAccount token, its hostPath volumes), joins
the network namespace, joins the cgroup by writing to its `cgroup.procs` last, then execs CMD,
so the exec is the pod's first event. Node.spawn (demo_cluster.py) starts it by path with
`python -I`: no Python runs between fork and exec in the demo's own process, whose gRPC threads
make that unsafe. Standard library only."""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
FAKE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.parallax-demo-token.not-a-real-signature"  # noqa: S105


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), what)


def _mount(libc: ctypes.CDLL, source: str, target: str, fstype: str | None, flags: int) -> None:
    kind = fstype.encode() if fstype else None
    _check(libc.mount(source.encode(), target.encode(), kind, flags, None), f"mount {target}")


def private_view(libc: ctypes.CDLL, token: bool, host_paths: dict[str, str]) -> None:
    """A mount namespace with the token and hostPath mounts."""
    _check(libc.unshare(CLONE_NEWNS), "unshare")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)
    if token:
        _mount(libc, "tmpfs", "/run", "tmpfs", 0)  # the pod's own /run, as a container has
        token_dir = Path(TOKEN_DIR)
        token_dir.mkdir(parents=True)
        (token_dir / "token").write_text(FAKE_TOKEN)
        (token_dir / "namespace").write_text("shop")
    for target, source in host_paths.items():
        _mount(libc, "tmpfs", str(Path(target).parent), "tmpfs", 0)  # a mount point
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount(libc, source, target, None, MS_BIND)


def main(argv: list[str]) -> None:
    view, netns, procs, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: demo_enter.py VIEW_JSON NETNS PROCS -- CMD...")
    libc = ctypes.CDLL(None, use_errno=True)
    spec = json.loads(view)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)  # before the view hides /run
    private_view(libc, bool(spec["token"]), dict(spec["host_paths"]))
    _check(libc.setns(fd, CLONE_NEWNET), "setns")
    os.close(fd)
    joined = os.open(procs, os.O_WRONLY)
    os.write(joined, b"0")
    os.close(joined)
    os.execvp(command[0], command)  # noqa: S606 - the pod's own command, as given


if __name__ == "__main__":
    main(sys.argv[1:])
