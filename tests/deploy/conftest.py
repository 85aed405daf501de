"""Fixtures of the deploy tests: the repository's deploy/ directory and its rendered builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.kustomize import Obj, render

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Every directory `kubectl apply -k` is meant to be pointed at.
BUILDS = ("base", "overlays/dev", "overlays/dev-csi-agent")


@pytest.fixture(scope="session")
def builds() -> dict[str, list[Obj]]:
    """Each build directory rendered, by its path under deploy/."""
    return {build: render(DEPLOY / build) for build in BUILDS}


@pytest.fixture(scope="session")
def full(builds: dict[str, list[Obj]]) -> list[Obj]:
    """The development overlay: base and every component."""
    return builds["overlays/dev"]
