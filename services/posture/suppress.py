"""Suppression of findings by object annotation or by a YAML config file, each with a reason.

`rules.evaluate` asks `SuppressionConfig.match` and `annotation_suppressions` for every finding;
the CLI and servicer call `load_suppressions` on the user's config file.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from services.posture.domain import InvalidArgument, ObjectRef, Suppression

ANNOTATION = "parallax.dev/suppress"
_ENTRY = re.compile(r"^\s*([A-Za-z]+-\d+(?:\s*,\s*[A-Za-z]+-\d+)*)\s*:\s*(\S.*?)\s*$")
_RULE_KEYS = frozenset({"control", "reason", "namespace", "kind", "name", "source"})


@dataclass(frozen=True)
class SuppressionRule:
    """One config entry: a control id glob, optional object globs and a required reason."""

    control: str
    reason: str
    namespace: str = "*"
    kind: str = "*"
    name: str = "*"
    source: str = "*"

    def matches(self, control_id: str, ref: ObjectRef) -> bool:
        pairs = (
            (control_id, self.control),
            (ref.namespace, self.namespace),
            (ref.kind, self.kind),
            (ref.name, self.name),
            (ref.location.uri, self.source),
        )
        return all(fnmatch.fnmatchcase(value, pattern) for value, pattern in pairs)


@dataclass(frozen=True)
class SuppressionConfig:
    """The parsed suppression file; the first matching rule wins."""

    rules: tuple[SuppressionRule, ...] = ()

    def match(self, control_id: str, ref: ObjectRef) -> Suppression | None:
        for rule in self.rules:
            if rule.matches(control_id, ref):
                return Suppression(rule.reason, "config")
        return None


def load_suppressions(text: str) -> SuppressionConfig:
    """Parse the YAML config (`suppressions: [{control, reason, namespace?, kind?, ...}]`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"suppression config is not valid YAML: {exc}") from exc
    if data is None:
        return SuppressionConfig()
    if not isinstance(data, Mapping) or set(data) - {"suppressions"}:
        raise InvalidArgument("suppression config must be a mapping with one key, 'suppressions'")
    entries = data.get("suppressions")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise InvalidArgument("'suppressions' must be a list")
    return SuppressionConfig(tuple(_rule(i, entry) for i, entry in enumerate(entries)))


def _rule(index: int, entry: Any) -> SuppressionRule:
    where = f"suppressions[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidArgument(f"{where} must be a mapping")
    unknown = sorted(str(k) for k in set(entry) - _RULE_KEYS)
    if unknown:
        raise InvalidArgument(f"{where} has unknown keys: {', '.join(unknown)}")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}.{key} must be a string")
    control, reason = entry.get("control", "").strip(), entry.get("reason", "").strip()
    if not control:
        raise InvalidArgument(f"{where}.control is required (a control id such as CTR-01)")
    if not reason:
        raise InvalidArgument(f"{where}.reason is required: say why the finding is accepted")
    globs = {k: entry[k] for k in ("namespace", "kind", "name", "source") if k in entry}
    return SuppressionRule(control=control, reason=reason, **globs)


def annotation_suppressions(annotations: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Control id -> reason from `parallax.dev/suppress`, plus one message per malformed line.

    The value holds one entry per line, `CTR-01,CTR-03: reason text`.
    """
    value = annotations.get(ANNOTATION)
    if value is None:
        return {}, []
    if not isinstance(value, str):
        return {}, [f"annotation {ANNOTATION} must be a string"]
    reasons: dict[str, str] = {}
    problems: list[str] = []
    for line in value.splitlines():
        if not line.strip():
            continue
        match = _ENTRY.match(line)
        if match is None:
            problems.append(
                f"annotation {ANNOTATION}: {line.strip()[:80]!r} is not 'CTR-01,CTR-03: reason'"
            )
            continue
        for control in match.group(1).split(","):
            reasons[control.strip().upper()] = match.group(2)
    return reasons, problems
