"""Settings read from the environment fail fast with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicekit.config import ConfigError, ServerSettings, address, integer
from servicekit.storage import database_url


def test_server_settings_defaults(tmp_path: Path) -> None:
    env = {"PARALLAX_DATA": str(tmp_path), "PARALLAX_INSECURE": "true"}
    settings = ServerSettings.from_env(env, "posture", 50051)
    assert settings.listen == "127.0.0.1:50051"
    assert settings.run_dir == tmp_path / "run"
    assert settings.database_url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PARALLAX_LISTEN": "nowhere"}, "PARALLAX_LISTEN must be host:port"),
        ({"PARALLAX_LISTEN": "h:99999"}, "PARALLAX_LISTEN must be host:port"),
        ({"PARALLAX_LOG_LEVEL": "loud"}, "PARALLAX_LOG_LEVEL"),
        ({"PARALLAX_GRACE_SECONDS": "soon"}, "PARALLAX_GRACE_SECONDS must be a number"),
    ],
    ids=["no-port", "port-range", "log-level", "grace"],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings.from_env({"PARALLAX_INSECURE": "true", **env}, "posture", 50051)


def test_plaintext_is_never_implicit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PARALLAX_TLS_DIR is not set"):
        ServerSettings.from_env({}, "posture", 50051)
    with pytest.raises(ConfigError, match="not both"):
        ServerSettings.from_env(
            {"PARALLAX_INSECURE": "true", "PARALLAX_TLS_DIR": str(tmp_path)}, "posture", 50051
        )
    with pytest.raises(ConfigError, match="run `parallax certs init`"):
        ServerSettings.from_env({"PARALLAX_TLS_DIR": str(tmp_path)}, "posture", 50051)


def test_required_upstream_address() -> None:
    with pytest.raises(ConfigError, match="PARALLAX_RUNTIME_ADDRESS is required"):
        address({}, "PARALLAX_RUNTIME_ADDRESS", None)


def test_integer_range() -> None:
    assert integer({"N": "5"}, "N", 1, low=1, high=10) == 5
    with pytest.raises(ConfigError, match="between 1 and 10"):
        integer({"N": "50"}, "N", 1, low=1, high=10)


def test_database_url_resolution(tmp_path: Path) -> None:
    assert database_url(None, tmp_path, "runtime") == f"sqlite:///{tmp_path / 'runtime.db'}"
    assert database_url("postgresql://u@h/db", tmp_path, "x") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        database_url("mysql://u@h/db", tmp_path, "x")
