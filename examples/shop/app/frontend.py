"""shop frontend: the HTML storefront, calling the api (API_URL). GET / lists products,
GET /cart?user=u[&add=p] shows (and fills) a cart. DEBUG=1 leaves /debug/run enabled: a
forgotten troubleshooting endpoint that runs a shell command, the hole the demo's attack uses."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

API = os.environ.get("API_URL", "http://api:8080")


def api(path: str, method: str = "GET") -> object:
    """Call the api and decode its JSON answer."""
    request = urllib.request.Request(API + path, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=3) as answer:  # noqa: S310
        return json.load(answer)


class Handler(BaseHTTPRequestHandler):
    """The storefront's routes."""

    def _page(self, status: int, body: str) -> None:
        data = f"<!doctype html><title>shop</title><h1>shop</h1>{body}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            products = api("/products")
            assert isinstance(products, list)
            rows = "".join(f"<li>{html.escape(p['name'])}</li>" for p in products)
            self._page(200, f"<ul>{rows}</ul>")
        elif url.path == "/cart" and "user" in query:
            user = query["user"]
            cart = api(f"/cart/{user}?item={query['add']}", "POST") if "add" in query else None
            cart = cart or api(f"/cart/{user}")
            self._page(200, f"<p>cart: {html.escape(json.dumps(cart))}</p>")
        elif url.path == "/debug/run" and os.environ.get("DEBUG") == "1":
            done = subprocess.run(  # noqa: S602 - the deliberate hole
                query.get("cmd", "true"), shell=True, capture_output=True, check=False
            )
            self._page(200, f"<pre>{html.escape(done.stdout.decode(errors='replace'))}</pre>")
        else:
            self._page(404, "<p>not found</p>")

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
    print(f"frontend listening on {server.server_port}", flush=True)
    if "--check" not in sys.argv:
        server.serve_forever()
    server.server_close()
