"""Dynamic parts of paths and argument vectors collapse into patterns; stable names stay."""

from __future__ import annotations

import pytest

from services.runtime.patterns import argv_pattern, collapse_path

PATHS = [
    ("/proc/1234/stat", "/proc/*/stat"),
    ("/proc/1/task/77/status", "/proc/*/task/*/status"),
    ("/proc/self/maps", "/proc/self/maps"),
    ("/tmp/upload-a8F3kq", "/tmp/upload-*"),
    ("/tmp/tmpab12cd3x", "/tmp/*"),
    ("/var/tmp/sess_4f9a2.json", "/var/tmp/sess_*.json"),
    ("/tmp/report.pdf", "/tmp/report.pdf"),
    ("/usr/bin/python3", "/usr/bin/python3"),
    ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3"),
    (
        "/var/lib/kubelet/pods/0f8fad5b-d9cb-469f-a165-70867728950e/volumes",
        "/var/lib/kubelet/pods/*/volumes",
    ),
    ("/data/blobs/9f86d081884c7d659a2feaa0c55ad015", "/data/blobs/*"),
    ("1234/stat", "*/stat"),  # relative to the working directory
    ("cache/77", "cache/*"),
    ("//proc//12//", "//proc//*//"),
]


@pytest.mark.parametrize(("path", "pattern"), PATHS, ids=[p for p, _ in PATHS])
def test_collapse_path(path: str, pattern: str) -> None:
    assert collapse_path(path) == pattern


def test_argv_pattern_keeps_flags_and_collapses_values() -> None:
    argv = ("/app/worker", "--port=8080", "--job", "31337", "/tmp/in-x9k2ZZ", "serve")
    assert argv_pattern(argv) == ("/app/worker", "--port=*", "--job", "*", "/tmp/in-*", "serve")


def test_scripts_collapse_word_by_word() -> None:
    """`sh -c` scripts carry their varying values inside one argument: each word is collapsed
    (ids, pids, temporary paths), spacing kept, so a health check run with a new id each time
    stays one profile item."""
    first = ("/bin/sh", "-c", "/app/healthcheck --port 8080 --id 1234  >/tmp/out-x9k2ZZ")
    second = ("/bin/sh", "-c", "/app/healthcheck --port 8080 --id 98765  >/tmp/out-Qz81ab")
    assert argv_pattern(first) == argv_pattern(second)
    assert argv_pattern(first)[2] == "/app/healthcheck --port * --id *  >/tmp/out-*"
    assert argv_pattern(("/bin/sh", "-c", "kill -9 $(cat /run/app/1234/pid)"))[2] == (
        "kill -9 $(cat /run/app/*/pid)"
    )
