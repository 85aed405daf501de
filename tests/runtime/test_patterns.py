"""Dynamic parts of paths and argument vectors collapse into patterns; stable names stay."""

from __future__ import annotations

import os
import random
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from services.runtime import patterns
from services.runtime.patterns import argv_pattern, collapse_path

# Stable names: versions, ABI tags and architectures are behaviour, so none of these changes.
STABLE = [
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/ld-linux-x86-64.so.2",
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/lib/python3.11/os.py",
    "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
    "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
    "/usr/local/lib/python3.11/site-packages/certifi-2023.11.17.dist-info/METADATA",
    "/usr/bin/python3.11",
    "/usr/bin/python3",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs/02265526.0",  # a subject hash that happens to be all digits
    "/usr/share/zoneinfo/Europe/Berlin",
    "/app/server",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libcrypto.so.1.1",
    "/usr/lib/x86_64-linux-gnu/libx264.so.164",
    "/usr/lib/x86_64-linux-gnu/libavcodec.so.59.37.100",
    "/usr/lib/x86_64-linux-gnu/libabsl_base.so.20220623",
    "/usr/lib/x86_64-linux-gnu/gconv/ISO-IR-197.so",
    "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
    "/app/lib/netty-codec-4.1.100.Final.jar",
    "/app/lib/jetty-util-9.4.53.v20231009.jar",
    "/var/log/nginx/access.log.1",
    "/proc/self/maps",
    "/data/app42/worker7.log",  # digits glued to a word: a name, not a value
    "/tmp/report.pdf",
    "/tmp/.X11-unix/X0",
    "/tmp/nginx_client_body",
    "/tmp/hsperfdata_root",
    "/tmp/gunicorn.sock",
    "/tmp/php-fpm.sock",
    "/tmp/tmpfiles",
    "/tmp/phpmyadmin",
]


@pytest.mark.parametrize("path", STABLE, ids=STABLE)
def test_stable_names_stay(path: str) -> None:
    assert collapse_path(path) == path


PATHS = [
    ("/proc/1234/stat", "/proc/*/stat"),
    ("/proc/1/task/77/status", "/proc/*/task/*/status"),
    (
        "/var/lib/kubelet/pods/0f8fad5b-d9cb-469f-a165-70867728950e/volumes",
        "/var/lib/kubelet/pods/*/volumes",
    ),
    ("/data/blobs/9f86d081884c7d659a2feaa0c55ad015", "/data/blobs/*"),
    ("1234/stat", "*/stat"),  # relative to the working directory
    ("cache/77", "cache/*"),
    ("//proc//12//", "//proc//*//"),
    # Inside a segment: UUIDs, long hex ids, dates and numbers of 3+ digits.
    ("/var/lib/app/cache/0f8fad5b-d9cb-469f-a165-70867728950e.json", "/var/lib/app/cache/*.json"),
    ("/var/lib/app/0f8fad5b_d9cb_469f_a165_70867728950e.db", "/var/lib/app/*.db"),
    ("/var/lib/app/abcdefab-cdef-4abc-abcd-abcdefabcdef.db", "/var/lib/app/*.db"),
    ("/data/session-9f86d081884c7d659a2feaa0c55ad015.lock", "/data/session-*.lock"),
    (
        "/sys/fs/cgroup/cri-containerd-9f86d081884c7d659a2feaa0c55ad0159f86d081884c7d659a2feaa0c55ad015.scope/cpu.max",
        "/sys/fs/cgroup/cri-containerd-*.scope/cpu.max",
    ),
    ("/var/log/app/app-2024-05-01.log", "/var/log/app/app-*.log"),
    ("/var/log/app/app.log-20240501", "/var/log/app/app.log-*"),
    ("/var/log/app/app-2024-05-01T12:30:00Z.log", "/var/log/app/app-*.log"),
    ("/var/log/app/app-2024-05-01.1.log", "/var/log/app/app-*.1.log"),
    ("/var/backups/db_20240501_123000.sql.gz", "/var/backups/db_*.sql.gz"),
    (
        "/var/run/secrets/kubernetes.io/serviceaccount/..2024_05_01_12_30_00.123456789/token",
        "/var/run/secrets/kubernetes.io/serviceaccount/..*/token",
    ),
    ("/var/lib/mysql/binlog.000123", "/var/lib/mysql/binlog.*"),
    (
        "/var/log/pods/ns_web_0f8fad5b-d9cb-469f-a165-70867728950e/c/0.log.20240501-123456",
        "/var/log/pods/ns_web_*/c/0.log.*",
    ),
    ("/var/log/app/worker.31337.log", "/var/log/app/worker.*.log"),
    ("/var/cache/app/123-456.bin", "/var/cache/app/*-*.bin"),
    ("/run/app/app-1714560000123.sock", "/run/app/app-*.sock"),
]


@pytest.mark.parametrize(("path", "pattern"), PATHS, ids=[p for p, _ in PATHS])
def test_collapse_path(path: str, pattern: str) -> None:
    assert collapse_path(path) == pattern


# In temporary directories, the random part of a generated name, whatever its alphabet; the
# prefix and suffix stay.
TEMP_PATHS = [
    ("/tmp/tmpk3_ab9xq", "/tmp/tmp*"),
    ("/tmp/tmpabcdefgh", "/tmp/tmp*"),  # Python's random part, all letters by chance
    ("/tmp/tmpab12cd3x", "/tmp/tmp*"),
    ("/var/tmp/tmpk3_ab9xq.json", "/var/tmp/tmp*.json"),
    ("/tmp/tmpk3_ab9xq/r.db-wal", "/tmp/tmp*/r.db-wal"),
    ("/tmp/upload_qwhrkzpx", "/tmp/upload_*"),
    ("/tmp/upload_qwhrkzpxmtbvla", "/tmp/upload_*"),
    ("/tmp/upload__k3ab9xq", "/tmp/upload_*"),  # the random part starts with `_`
    ("/tmp/upload_k3_ab9xq", "/tmp/upload_*"),
    ("/tmp/upload-a8F3kq", "/tmp/upload-*"),
    ("/tmp/sess_a1b2c3d4e5f6g7h8i9j0klmnop", "/tmp/sess_*"),
    ("/tmp/sess_abcdefghijklmnopqrstuvwxyz", "/tmp/sess_*"),
    ("/var/tmp/sess_4f9a2.json", "/var/tmp/sess_*.json"),
    ("/tmp/phpA1b2C3", "/tmp/php*"),
    ("/tmp/phpabcdef", "/tmp/php*"),
    ("/tmp/tmpAbC123", "/tmp/tmp*"),
    ("/tmp/tmp.AbCdEf1234", "/tmp/tmp.*"),
    ("/tmp/pip-install-k3j2_abc/numpy/setup.py", "/tmp/pip-install-*/numpy/setup.py"),
    ("/tmp/pip-req-build-abcdefgh/pyproject.toml", "/tmp/pip-req-build-*/pyproject.toml"),
    ("/tmp/hsperfdata_root/1234", "/tmp/hsperfdata_root/*"),
    ("/tmp/app-2024-05-01.log", "/tmp/app-*.log"),
    ("/dev/shm/sem.a1b2C3", "/dev/shm/sem.*"),
    ("/run/user/1000/bus", "/run/user/*/bus"),
    (
        "/tmp/systemd-private-9f86d081884c7d659a2feaa0c55ad015-chronyd.service-AbC123/tmp",
        "/tmp/systemd-private-*-chronyd.service-*/tmp",
    ),
]


@pytest.mark.parametrize(("path", "pattern"), TEMP_PATHS, ids=[p for p, _ in TEMP_PATHS])
def test_collapse_temp_path(path: str, pattern: str) -> None:
    assert collapse_path(path) == pattern


N = 10_000
# What mkstemp, mkdtemp and NamedTemporaryFile draw their 8 random characters from.
TEMPFILE = tempfile._get_candidate_names()  # type: ignore[attr-defined]
RNG = random.Random(7)


def _tempfile_part() -> str:
    return str(next(TEMPFILE))


def _lowercase_part() -> str:
    return "".join(RNG.choices(string.ascii_lowercase, k=RNG.randint(8, 16)))


def _php_session_id() -> str:
    return "".join(RNG.choices(string.ascii_lowercase + string.digits, k=26))


GENERATED = [
    ("mkstemp", "/tmp/tmp{}", _tempfile_part, "/tmp/tmp*"),
    ("suffix", "/var/tmp/tmp{}.json", _tempfile_part, "/var/tmp/tmp*.json"),
    ("prefix", "/tmp/upload_{}", _tempfile_part, "/tmp/upload_*"),
    (
        "mkdtemp",
        "/tmp/pip-install-{}/pkg/setup.py",
        _tempfile_part,
        "/tmp/pip-install-*/pkg/setup.py",
    ),
    ("shm", "/dev/shm/tmp{}", _tempfile_part, "/dev/shm/tmp*"),
    ("lowercase", "/tmp/upload_{}", _lowercase_part, "/tmp/upload_*"),
    ("php-session", "/tmp/sess_{}", _php_session_id, "/tmp/sess_*"),
]


@pytest.mark.parametrize(
    ("template", "part", "pattern"), [g[1:] for g in GENERATED], ids=[g[0] for g in GENERATED]
)
def test_generated_temp_names_collapse_to_one_pattern(
    template: str, part: Callable[[], str], pattern: str
) -> None:
    """10,000 generated names are one profile item, not one per request, so the profile can
    complete."""
    paths = {template.format(part()) for _ in range(N)}
    assert len(paths) > N * 0.99
    assert {collapse_path(p) for p in paths} == {pattern}


def test_real_temp_files_collapse_to_their_prefix_and_suffix(tmp_path: Path) -> None:
    """Names made by the tempfile API itself, moved into /tmp by name only."""
    made = set()
    for _ in range(200):
        handle, name = tempfile.mkstemp(dir=tmp_path)
        os.close(handle)
        made.add(collapse_path("/tmp/" + os.path.basename(name)))
        with tempfile.NamedTemporaryFile(dir=tmp_path, prefix="upload_", suffix=".json") as file:
            made.add(collapse_path("/tmp/" + os.path.basename(file.name)))
        made.add(collapse_path("/tmp/" + os.path.basename(tempfile.mkdtemp(dir=tmp_path)) + "/x"))
    assert made == {"/tmp/tmp*", "/tmp/upload_*.json", "/tmp/tmp*/x"}


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
    assert argv_pattern(("/usr/bin/python3", "/tmp/tmpk3_ab9xq.py"))[1] == "/tmp/tmp*.py"


def test_a_path_collapses_as_its_directory_and_last_segment_apart() -> None:
    """_pattern collapses a directory once and the last segment alone: the same as the whole
    path in one pass, for the machine's own paths and generated temporary ones."""
    names = tempfile._get_candidate_names()
    paths = [f"/tmp/{next(names)}/missing/{n}" for n in range(500)]
    paths += [f"/nonexistent/240000-{n}/{n:0{n % 7 + 1}d}" for n in range(500)]  # numeric last
    for root in ("/usr/lib", "/etc", "/proc/self"):
        for count, (directory, dirs, files) in enumerate(os.walk(root)):
            paths += [os.path.join(directory, f) for f in (*files, *dirs)]
            if count > 300:
                break
    for path in paths:
        whole = patterns._collapsed(path, path.startswith(patterns.TEMP_DIRS))
        assert patterns._pattern(path) == whole, path


@pytest.mark.parametrize(
    "script",
    [
        "/app/healthcheck --port 8080 --id 1234",
        "  leading and trailing  ",
        "two  spaces   and three",
        "tab\there and\nnewline",
        "curl -o /tmp/x-9f8e7d6c5b http://10.0.0.1:8080/ >/dev/null 2>&1",
        "unicode\u00a0space 1234",
        "",
        " ",
        "one",
    ],
)
def test_a_script_splits_on_spaces_as_the_regex_does(script: str) -> None:
    """The split on plain spaces gives what the whitespace regex gives, word for word."""
    by_regex = "".join(patterns._collapse_word(w) for w in patterns._WORDS.split(script))
    assert patterns._collapse_argument(script) == by_regex
