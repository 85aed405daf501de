"""A throwaway PostgreSQL cluster for store tests: Debian's server binaries, a data directory
and a Unix socket in a temporary directory, started with `pg_ctl -w` and removed afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def server_bin() -> str | None:
    """Return the directory of the newest installed PostgreSQL server binaries, if any."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(candidates[-1]) if candidates else None


def _as_owner(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; under root the cluster belongs to the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextmanager
def cluster(timeout: int = 60) -> Iterator[str]:
    """Start a cluster and yield a SQLAlchemy URL for its `parallax` database."""
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    root = tempfile.mkdtemp(prefix="parallax-pg-")
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, sockets = os.path.join(root, "data"), root

    def run(*argv: str) -> None:
        subprocess.run(_as_owner(list(argv)), check=True, capture_output=True, timeout=timeout)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "parallax", "-A", "trust")
        options = f"-c listen_addresses='' -c unix_socket_directories={sockets} -c fsync=off"
        log = os.path.join(root, "server.log")
        run(
            f"{bindir}/pg_ctl",
            "-D",
            data,
            "-l",
            log,
            "-o",
            options,
            "-w",
            "-t",
            str(timeout),
            "start",
        )
        try:
            run(f"{bindir}/createdb", "-h", sockets, "-U", "parallax", "parallax")
            yield f"postgresql+psycopg://parallax@/parallax?host={sockets}"
        finally:
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(url: str) -> str:
    """Create an empty database in the cluster behind `url` and return its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    host = url.split("host=", 1)[1]
    with psycopg.connect(host=host, user="parallax", dbname="parallax", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.replace("/parallax?", f"/{name}?")
