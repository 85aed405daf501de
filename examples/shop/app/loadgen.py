"""shop loadgen: drives shopping traffic at the frontend (FRONTEND_URL) for N rounds and prints
one JSON line {"requests": n, "ok": n, "errors": [...]}; exits 1 when a request failed."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

BASE = os.environ.get("FRONTEND_URL", "http://frontend:8080")
PATHS = ("/", "/cart?user=ada&add=p1", "/cart?user=bob&add=p2", "/cart?user=ada")


def main(rounds: int) -> int:
    """Run `rounds` rounds of the shopping paths; return the exit status."""
    ok, errors = 0, []
    for _ in range(rounds):
        for path in PATHS:
            try:
                with urllib.request.urlopen(BASE + path, timeout=5) as answer:  # noqa: S310
                    ok += answer.status == 200 and b"shop" in answer.read()
            except OSError as exc:
                errors.append(f"{path}: {exc}")
    print(json.dumps({"requests": rounds * len(PATHS), "ok": ok, "errors": errors[:5]}))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
