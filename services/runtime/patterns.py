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
_RANDOM_HINT = re.compile(r"[0-9A-Z]")
_SPACE = re.compile(r"\s")
_WORDS = re.compile(r"(\s+)")
_REDIRECTED = re.compile(r"^([^A-Za-z/]+)(/.*)$")
# A slash and a whole path segment that _dynamic_segment accepts, found in one pass over the
# path (the leading literal slash lets the scan skip to candidates).
_DYNAMIC_SEGMENT = re.compile(
    r"/(?:\d+|[0-9a-fA-F]{8}(?:-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}|[0-9a-fA-F]{16,})(?=/|$)"
)


def _dynamic_segment(segment: str) -> bool:
    return bool(_DIGITS.match(segment) or _UUID.match(segment) or _HEX.match(segment))


def _collapse_temp_segment(segment: str) -> str:
    if not _RANDOM_HINT.search(segment):  # neither pattern can match without these
        return segment
    parts = _TOKEN_SPLIT.split(segment)
    for index, part in enumerate(parts):
        if _RANDOM_WITH_DIGIT.match(part) or _MIXED_CASE.match(part):
            parts[index] = WILDCARD
    return "".join(parts)


# Patterns by path. Cleared when full rather than kept in LRU order: streams of distinct paths
# (failed lookups, temp files) would pay for the LRU bookkeeping on every miss.
_PATTERNS: dict[str, str] = {}
MEMO_SIZE = 65_536


def collapse_path(path: str) -> str:
    """Return the pattern of `path`: numeric ids, UUIDs and long hex ids become `*` anywhere;
    random-looking tokens of file names in temporary directories become `*` too."""
    found = _PATTERNS.get(path)
    if found is None:
        if len(_PATTERNS) >= MEMO_SIZE:
            _PATTERNS.clear()
        found = _PATTERNS[path] = _pattern(path)
    return found


def _pattern(path: str) -> str:
    if path.startswith("/"):
        collapsed = _DYNAMIC_SEGMENT.sub("/" + WILDCARD, path)
    else:  # relative: its first segment counts too
        collapsed = _DYNAMIC_SEGMENT.sub("/" + WILDCARD, "/" + path)[1:]
    if not path.startswith(TEMP_DIRS):
        return collapsed
    segments = collapsed.split("/")
    for index in range(2, len(segments)):
        segment = segments[index]
        if segment and segment != WILDCARD:
            segments[index] = _collapse_temp_segment(segment)
    return "/".join(segments)


def _collapse_argument(argument: str) -> str:
    if _SPACE.search(argument):  # a script (`sh -c "..."`): each word on its own
        return "".join(_collapse_word(w) for w in _WORDS.split(argument))
    return _collapse_word(argument)


def _collapse_word(argument: str) -> str:
    if not argument or argument.isspace():
        return argument
    redirected = _REDIRECTED.match(argument)  # `>/tmp/out-x9k2`, `2>/dev/null`, `"/path`
    if redirected:
        return redirected[1] + collapse_path(redirected[2])
    if argument.startswith("/"):
        return collapse_path(argument)
    if _dynamic_segment(argument):
        return WILDCARD
    flag, sep, value = argument.partition("=")
    if sep and flag.startswith("-") and value:
        return f"{flag}={_collapse_word(value)}"
    return argument


@lru_cache(maxsize=16_384)
def argv_pattern(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Return `argv` with varying arguments (numbers, ids, temporary paths) replaced by `*`;
    an argument with spaces (a `sh -c` script) is collapsed word by word."""
    return tuple(_collapse_argument(a) for a in argv)


def matches(pattern: str, path: str) -> bool:
    """Return True when `path` collapses to `pattern` or equals it."""
    return pattern == path or collapse_path(path) == pattern
