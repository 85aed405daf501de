"""Fixtures of the policygen tests: the recorded cart profile and the shop cluster's objects
from testdata/, and golden-file comparison (PARALLAX_UPDATE_GOLDEN=1 rewrites the files)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import json_format
from parallax.runtime.v1 import profile_pb2

from services.policygen import cluster_parse, wire
from services.policygen.cluster import Cluster
from services.policygen.domain import Profile

TESTDATA = Path(__file__).parent / "testdata"


def profile_message(name: str = "profile-cart.json") -> profile_pb2.Profile:
    """Read a Profile message from testdata."""
    return json_format.Parse((TESTDATA / name).read_text(), profile_pb2.Profile())


@pytest.fixture
def cart() -> Profile:
    """The cart workload's COMPLETE profile."""
    return wire.profile_from_wire(profile_message())


@pytest.fixture
def shop() -> Cluster:
    """The objects of the cluster the profile was recorded in."""
    return cluster_parse.load([("objects.yaml", (TESTDATA / "objects.yaml").read_bytes())])


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """Compare text with testdata/<name>."""

    def check(name: str, text: str) -> None:
        path = TESTDATA / name
        if os.environ.get("PARALLAX_UPDATE_GOLDEN") == "1":
            path.write_text(text)
        assert path.exists(), f"{name} missing: run with PARALLAX_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{name} differs from its golden file"

    return check
