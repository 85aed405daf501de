"""Where the shared real-world manifest corpus lives: PARALLAX_CORPUS, else `../shared/corpus`
beside the checkout (as laid out for developers and CI), else the developers' `/work/shared`."""

from __future__ import annotations

import os
from pathlib import Path

_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "corpus"
_CANDIDATES = (os.environ.get("PARALLAX_CORPUS", ""), str(_BESIDE), "/work/shared/corpus")
CORPUS = next((Path(p) for p in _CANDIDATES if p and Path(p).is_dir()), _BESIDE)
