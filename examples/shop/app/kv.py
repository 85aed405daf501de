"""shop kv: a tiny key-value store over TCP, one command a line (`GET key`, `SET key value`,
`PING`), answering one line. Every SET is appended to DATA_DIR/data.log (a hostPath in the
manifest: the store really writes there) and the log is replayed at start."""

from __future__ import annotations

import os
import socketserver
import sys
from pathlib import Path

STORE: dict[str, str] = {}


class Handler(socketserver.StreamRequestHandler):
    """One client connection: commands until it closes."""

    def handle(self) -> None:
        log = self.server.log  # type: ignore[attr-defined]
        for raw in self.rfile:
            parts = raw.decode(errors="replace").strip().split(" ", 2)
            if parts[0] == "GET" and len(parts) == 2:
                reply = STORE.get(parts[1], "")
            elif parts[0] == "SET" and len(parts) == 3:
                STORE[parts[1]] = parts[2]
                log.write(f"{parts[1]} {parts[2]}\n")
                log.flush()
                reply = "OK"
            elif parts[0] == "PING":
                reply = "PONG"
            else:
                reply = "ERR unknown command"
            self.wfile.write(reply.encode() + b"\n")


def serve(port: int, data_dir: Path, check: bool = False) -> None:
    """Replay the log, then serve on `port` (with `check`: bind, then exit)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "data.log"
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            STORE[key] = value
    address = ("0.0.0.0", port)  # noqa: S104 - a pod listens on its own address
    with path.open("a") as log, socketserver.TCPServer(address, Handler) as server:
        server.log = log  # type: ignore[attr-defined]
        print(f"kv listening on {port}, {len(STORE)} keys", flush=True)
        if not check:
            server.serve_forever()


if __name__ == "__main__":
    serve(
        int(os.environ.get("PORT", "6379")),
        Path(os.environ.get("DATA_DIR", "/var/lib/kv")),
        check="--check" in sys.argv,
    )
