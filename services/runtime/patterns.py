"""Collapsing of dynamic values into patterns, so that a profile holds `/proc/*/stat` once instead
of one entry per pid, and `/tmp/upload_*` instead of one per request. Pure and memoised; called
by the profile builder (steps, records, profiles) and the rules."""

from __future__ import annotations

import re
from typing import TypeVar

WILDCARD = "*"
K = TypeVar("K")
V = TypeVar("V")
TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")
_DIGITS = re.compile(r"^\d+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_SPACE = re.compile(r"\s")
_WORDS = re.compile(r"(\s+)")
_OTHER_SPACE = frozenset("\t\n\r\f\v")  # ASCII whitespace but the space
_REDIRECTED = re.compile(r"^([^A-Za-z/]+)(/.*)$")
_ANY_DIGIT = re.compile(r"\d")

# Each alternative matches exactly the text that becomes `*`, its context in lookarounds, so that
# one `sub` with a literal replacement does a whole path in C. A token is what starts after `/`,
# `-`, `_` or `.` (or at the start of a relative path) and ends before one of them (or the end).
_END = r"(?=[-_./]|$)"
# Outside temporary directories, a match starts with a token's first character, a hex digit: the
# regex engine skips to candidates in C instead of trying the lookarounds at every position. The
# alternatives below say what follows that first character.
_FIRST = r"[0-9a-fA-F](?<![^-_./].)"
# A whole numeric segment: `/proc/1234`.
_SEGMENT = r"(?<![^/]\d)\d*(?=/|$)"
# A hex id of 16+ digits or a UUID, holding a digit (as every alternative here does: a path
# without one holds nothing dynamic, _pattern's early exit).
_ID = (
    r"(?:(?:(?<=\d)|(?=[a-fA-F]*\d))[0-9a-fA-F]{15,}"
    r"|(?:(?<=\d)|(?=[-_a-fA-F]{0,34}\d))"
    r"[0-9a-fA-F]{7}(?:[-_][0-9a-fA-F]{4}){3}[-_][0-9a-fA-F]{12})" + _END
)
# A date (`2024-05-01`, `20240501`), with a time or not (`2024-05-01T12:30:00Z`,
# `20240501_123000`, kubelet's `2024_05_01_12_30_00.123456789`).
_DATE = (
    r"(?:(?<=1)9|(?<=2)0)\d\d(?P<dash>[-_]?)(?:0[1-9]|1[0-2])(?P=dash)(?:0[1-9]|[12]\d|3[01])"
    r"(?:[T_-]?(?:[01]\d|2[0-3])(?P<colon>[:_-]?)[0-5]\d(?:(?P=colon)[0-5]\d(?:\.\d+)?)?Z?)?"
)
# A date or a number of 3+ digits, but not a version: dotted (`4.1.100`, `certifi-2023.11.17`),
# a shared library's (`libx264.so.164`, `libfoo-123.so`) or CPython's ABI tag (`cpython-311`).
_COUNTER = (
    rf"(?<!\.so\.\d)(?<!cpython-\d)(?:{_DATE}|(?<!\d\.\d)\d{{2,}}(?!\.\d))"
    r"(?![^/]*\.so(?:[./]|$))" + _END
)
_DYNAMIC = rf"{_FIRST}(?:{_ID}|(?<=\d)(?:{_SEGMENT}|{_COUNTER}))"
_PATH = re.compile(_DYNAMIC)

# In temporary directories, the random part of a generated name whatever its alphabet, after the
# prefix it keeps and before its suffix (`.json`, `-journal`): Python's tempfile (8 of
# [a-z0-9_]: `tmpk3_ab9xq`, `upload_*`, `pip-install-*`), mkstemp(3) (`tmpXXXXXX`, PHP's
# `phpXXXXXX`), mktemp(1) (`tmp.XXXXXXXXXX`), and a run of 9+ lowercase letters and digits after
# `-` or `_`. A word of 8+ letters ending a name after `-` or `_` looks the same and collapses
# too (`hsperfdata_postgres`): in a temporary directory, that is the price of a bounded profile.
_TEMP_NAME = r"(?:[a-z0-9_]{8}|[A-Za-z0-9]{6})(?=[.-]|/|$)"
_GENERATED = (
    rf"(?<=/tmp|/php){_TEMP_NAME}"
    r"|(?<=/tmp\.)[A-Za-z0-9]{10}(?=[.-]|/|$)"
    r"|(?<=[-_])(?:[a-z0-9_]{8}|[a-z0-9]{9,})(?=[.-]|/|$)"
)
# ... and any random-looking token: one with a digit, mixed case, or of 20 characters or more,
# unless it starts a generated name, whose prefix stays.
_RANDOM = (
    rf"(?<![^-_./])(?!(?<=/)(?:tmp|php){_TEMP_NAME})"
    r"(?:(?=[A-Za-z]*\d)[A-Za-z0-9]{4,}|(?=[a-z0-9]*[A-Z])(?=[A-Z0-9]*[a-z])[A-Za-z0-9]{6,}"
    r"|[A-Za-z0-9]{20,})" + _END
)
# The temporary directories' own names hold nothing that this takes.
_TEMP_PATH = re.compile(rf"{_GENERATED}|{_DYNAMIC}|{_RANDOM}")


def _dynamic_segment(segment: str) -> bool:
    return bool(_DIGITS.match(segment) or _UUID.match(segment) or _HEX.match(segment))


# Patterns by path. Cleared when full rather than kept in LRU order: streams of distinct paths
# (failed lookups, temp files) would pay for the LRU bookkeeping on every miss.
_PATTERNS: dict[str, str] = {}
MEMO_SIZE = 65_536


def collapse_path(path: str) -> str:
    """Return the pattern of `path`: numeric segments, and UUIDs, long hex ids, dates and
    numbers of 3+ digits inside a segment become `*` anywhere (versions stay); in temporary
    directories, the random part of a generated name becomes `*` too, its prefix and suffix
    kept (`/tmp/tmp*.json`, `/tmp/upload_*`)."""
    found = _PATTERNS.get(path)
    return found if found is not None else _kept(_PATTERNS, path, _pattern(path), MEMO_SIZE)


def _kept(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Remember `value` for `key` in `memo`, emptied first when it holds `limit`; return it."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value


# Patterns of directories, by (directory, in a temporary directory): distinct paths mostly differ
# in their last segment (`/tmp/tmpk3j2abcd/missing/1234`), so each directory is collapsed once.
_DIRECTORIES: dict[tuple[str, bool], str] = {}
_NUMBER = "/" + WILDCARD


def _pattern(path: str) -> str:
    """The pattern of `path`: its directory's (memoised) and its last segment's. Nothing that
    becomes `*` spans a `/`, and what the rules look at around a match never reaches past the
    `/` before it, so collapsing the two apart gives what collapsing the whole does."""
    temp = path.startswith(TEMP_DIRS)
    head, slash, tail = path.rpartition("/")
    if not head:
        return _collapsed(path, temp)
    key = (head, temp)
    directory = _DIRECTORIES.get(key)
    if directory is None:
        directory = _kept(_DIRECTORIES, key, _collapsed(head, temp), MEMO_SIZE)
    if tail.isdigit() and tail.isascii():  # a numeric segment (`/proc/1234`, a file per id)
        return directory + _NUMBER  # what the regexes make of it, without them
    return directory + _collapsed(slash + tail, temp)


def _collapsed(text: str, temp: bool) -> str:
    if temp:
        return _TEMP_PATH.sub(WILDCARD, text)
    if _ANY_DIGIT.search(text) is None:
        return text
    return _PATH.sub(WILDCARD, text)


def _collapse_argument(argument: str) -> str:
    if argument.isascii() and not _OTHER_SPACE.intersection(argument):
        if " " not in argument:
            return _collapse_word(argument)
        # a script whose only whitespace is spaces: split on each, as _WORDS would (the runs
        # of spaces come back as empty words between them), without the regex
        return " ".join([_collapse_word(w) for w in argument.split(" ")])
    if _SPACE.search(argument):  # a script (`sh -c "..."`): each word on its own
        return "".join(_collapse_word(w) for w in _WORDS.split(argument))
    return _collapse_word(argument)


# Patterns of argv words and of whole argvs, memoised like paths but in fewer entries (a word
# may be a path, an argv many): command lines differ in a word or two (`--id 1234`), so most of
# their words are collapsed once.
_WORDS_SEEN: dict[str, str] = {}
_ARGVS: dict[tuple[str, ...], tuple[str, ...]] = {}
WORDS_SIZE, ARGVS_SIZE = 16_384, 4_096


def _collapse_word(argument: str) -> str:
    found = _WORDS_SEEN.get(argument)
    return (
        found
        if found is not None
        else _kept(_WORDS_SEEN, argument, _word_pattern(argument), WORDS_SIZE)
    )


def _word_pattern(argument: str) -> str:
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


def argv_pattern(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Return `argv` with varying arguments (numbers, ids, temporary paths) replaced by `*`;
    an argument with spaces (a `sh -c` script) is collapsed word by word."""
    found = _ARGVS.get(argv)
    if found is None:
        found = _kept(_ARGVS, argv, tuple(_collapse_argument(a) for a in argv), ARGVS_SIZE)
    return found


def matches(pattern: str, path: str) -> bool:
    """Return True when `path` collapses to `pattern` or equals it."""
    return pattern == path or collapse_path(path) == pattern
