"""Where the shared real-world manifest corpus lives: `../shared/corpus` beside the checkout
(as laid out for developers and CI), or PARALLAX_CORPUS."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = Path(
    os.environ.get("PARALLAX_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
