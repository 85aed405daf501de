"""shop api: JSON over HTTP in front of the kv store. GET /products, GET /cart/<user>,
POST /cart/<user>?item=<id>. KV_ADDR says where the store is (host:port)."""

from __future__ import annotations

import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

PRODUCTS = {"p1": "Parallax mug", "p2": "eBPF sticker pack", "p3": "Seccomp socks"}


def kv(command: str) -> str:
    """Send one command to the kv store and return its one-line answer."""
    host, _, port = os.environ.get("KV_ADDR", "kv:6379").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3) as conn:
        conn.sendall(command.encode() + b"\n")
        return conn.makefile().readline().strip()


class Handler(BaseHTTPRequestHandler):
    """The API's routes."""

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/products":
            self._reply(200, [{"id": k, "name": v} for k, v in PRODUCTS.items()])
        elif url.path.startswith("/cart/"):
            items = kv(f"GET cart:{url.path[6:]}")
            self._reply(200, {"items": [i for i in items.split(",") if i]})
        elif url.path == "/healthz":
            self._reply(200, {"kv": kv("PING")})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        item = parse_qs(url.query).get("item", [""])[0]
        if not url.path.startswith("/cart/") or item not in PRODUCTS:
            self._reply(400, {"error": "bad request"})
            return
        key = f"cart:{url.path[6:]}"
        items = [i for i in kv(f"GET {key}").split(",") if i] + [item]
        kv(f"SET {key} {','.join(items)}")
        self._reply(200, {"items": items})

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the demo reads answers, not access logs."""


if __name__ == "__main__":
    server = HTTPServer(
        (
            "0.0.0.0",  # noqa: S104 - a pod listens on its own address
            int(os.environ.get("PORT", "8080")),
        ),
        Handler,
    )
    print(f"api listening on {server.server_port}", flush=True)
    if "--check" not in sys.argv:
        server.serve_forever()
    server.server_close()
