"""Renders a strategic-merge patch as block YAML with a comment after each changed line, so the
evidence travels with the patch; the output parses back to the same structure (hardening tests
check it) and applies with `kubectl patch --type strategic`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

Path = tuple[str | int, ...]


def render(patch: Mapping[str, Any], comments: Mapping[Path, str]) -> str:
    """Return `patch` as YAML; `comments[path]` is appended to the line of the value at path."""
    lines: list[str] = []
    _mapping(patch, 0, (), comments, lines)
    return "\n".join(lines) + "\n"


def _mapping(
    node: Mapping[str, Any], indent: int, path: Path, comments: Mapping[Path, str], out: list[str]
) -> None:
    pad = " " * indent
    for key, value in node.items():
        here = (*path, key)
        if isinstance(value, Mapping) and value:
            out.append(f"{pad}{key}:{_comment(comments, here)}")
            _mapping(value, indent + 2, here, comments, out)
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            out.append(f"{pad}{key}:{_comment(comments, here)}")
            for index, item in enumerate(value):
                start = len(out)
                _mapping(item, indent + 2, (*here, index), comments, out)
                out[start] = f"{pad}- {out[start][indent + 2 :]}"
        else:
            out.append(f"{pad}{key}: {json.dumps(value)}{_comment(comments, here)}")


def _comment(comments: Mapping[Path, str], path: Path) -> str:
    text = comments.get(path)
    return f"  # {' '.join(text.split())}" if text else ""
