"""Collapsing of dynamic values into patterns, so that a profile holds `/proc/*/stat` once instead
of one entry per pid, and `/tmp/upload-*` instead of one per request. Pure and memoised; called
by the profile builder and the rules."""

from __future__ import annotations

import re
from functools import lru_cache

WILDCARD = "*"
TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")
_DIGITS = re.compile(r"^\d+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_TOKEN_SPLIT = re.compile(r"([-_.])")
_RANDOM_WITH_DIGIT = re.compile(r"^(?=[A-Za-z]*\d)[A-Za-z0-9]{4,}$")
_MIXED_CASE = re.compile(r"^(?=.*[a-z])(?=.*[A-Z])[A-Za-z0-9]{6,}$")


def _dynamic_segment(segment: str) -> bool:
    return bool(_DIGITS.match(segment) or _UUID.match(segment) or _HEX.match(segment))


def _collapse_temp_segment(segment: str) -> str:
    parts = _TOKEN_SPLIT.split(segment)
    for index, part in enumerate(parts):
        if _RANDOM_WITH_DIGIT.match(part) or _MIXED_CASE.match(part):
            parts[index] = WILDCARD
    return "".join(parts)


@lru_cache(maxsize=65_536)
def collapse_path(path: str) -> str:
    """Return the pattern of `path`: numeric ids, UUIDs and long hex ids become `*` anywhere;
    random-looking tokens of file names in temporary directories become `*` too."""
    segments = path.split("/")
    temp = path.startswith(TEMP_DIRS)
    out = []
    for index, segment in enumerate(segments):
        if _dynamic_segment(segment):
            out.append(WILDCARD)
        elif temp and index >= 2 and segment:
            out.append(_collapse_temp_segment(segment))
        else:
            out.append(segment)
    return "/".join(out)


def _collapse_argument(argument: str) -> str:
    if argument.startswith("/"):
        return collapse_path(argument)
    if _dynamic_segment(argument):
        return WILDCARD
    flag, sep, value = argument.partition("=")
    if sep and flag.startswith("-") and value:
        return f"{flag}={_collapse_argument(value)}"
    return argument


@lru_cache(maxsize=16_384)
def argv_pattern(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Return `argv` with varying arguments (numbers, ids, temporary paths) replaced by `*`."""
    return tuple(_collapse_argument(a) for a in argv)


def matches(pattern: str, path: str) -> bool:
    """Return True when `path` collapses to `pattern` or equals it."""
    return pattern == path or collapse_path(path) == pattern
