"""The rule machinery: control metadata registration, the per-scan Context, hits and patches.

Area modules (containers, pod, rbac, network, ...) register their checks on a `Registry`;
`rules.evaluate` runs them. Pure Python: no I/O, no grpc, no SQL.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.posture.domain import (
    Control,
    Manifest,
    RuntimeEvidence,
    RuntimeEvidenceKind,
    Severity,
)
from services.posture.workload import ContainerView, Path, PodView, ServiceAccounts, dig

T = TypeVar("T")
USED = RuntimeEvidenceKind.USED
CONFIRM_REFUTE = RuntimeEvidenceKind.CONFIRM_REFUTE
CONFIRM = RuntimeEvidenceKind.CONFIRM
EXPOSED = RuntimeEvidenceKind.EXPOSED
PARTIAL = RuntimeEvidenceKind.PARTIAL
NO_SIGNAL = RuntimeEvidenceKind.NONE
Patch = tuple[Mapping[str, Any], ...]

_FRAMEWORK_NAMES = {
    "AB": "ArmoBest",
    "CS": "ClusterScan",
    "DO": "DevOpsBest",
    "MITRE": "MITRE",
    "NSA": "NSA",
    "SEC": "security",
    "SOC2": "SOC2",
    "WS": "WorkloadScan",
}


@dataclass(frozen=True)
class RuleSettings:
    """Tunables of configurable controls; empty registry lists disable IMG-04."""

    allowed_registries: tuple[str, ...] = ()
    blocked_registries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    """A failing field found by a check; `path` is a field path or, for RBAC, a role chain."""

    path: Path | str
    message: str
    patch: Patch = ()


@dataclass(frozen=True)
class Context:
    """Everything a check may look up beyond its own object, built once per evaluation;
    `pod_views` holds the PodView of every workload."""

    settings: RuleSettings
    by_kind: Mapping[str, Sequence[Manifest]]
    service_accounts: ServiceAccounts
    pod_views: Sequence[PodView] = ()
    _cache: dict[str, Any] = field(default_factory=dict, compare=False)

    def of_kind(self, *kinds: str) -> Iterator[Manifest]:
        for kind in kinds:
            yield from self.by_kind.get(kind, ())

    def index(self, name: str, build: Callable[[Context], T]) -> T:
        """A lookup table built on first use and shared by every check of this scan."""
        if name not in self._cache:
            self._cache[name] = build(self)
        result: T = self._cache[name]
        return result

    def memo(self, name: str, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` once per `key` of the table `name`: for an answer several checks (or
        several workloads) ask for with the same inputs."""
        table: dict[Hashable, T] = self.index(name, lambda _: {})
        if key not in table:
            table[key] = compute()
        return table[key]


class Scope(enum.Enum):
    """What a check receives: one container, one pod spec, or one object of given kinds."""

    CONTAINER = "container"
    POD = "pod"
    OBJECT = "object"


ContainerCheck = Callable[[PodView, ContainerView, Context], Iterable[Hit]]
PodCheck = Callable[[PodView, Context], Iterable[Hit]]
ObjectCheck = Callable[[Manifest, Context], Iterable[Hit]]
AnyCheck = TypeVar("AnyCheck", ContainerCheck, PodCheck, ObjectCheck)


@dataclass(frozen=True)
class Rule:
    """A control bound to its check; `kinds` limits POD/OBJECT rules, `groups` CONTAINER ones."""

    control: Control
    scope: Scope
    check: Callable[..., Iterable[Hit]]
    kinds: frozenset[str] = frozenset()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Meta:
    """Catalog facts of one control as written in an area module."""

    id: str
    name: str
    severity: Severity
    runtime: tuple[RuntimeEvidenceKind, str]
    fix: str
    ks: tuple[str, ...] = ()
    ckv: tuple[str, ...] = ()
    fw: str = ""
    cis: tuple[str, ...] = ()
    unmapped: str = ""


class Registry:
    """Collects the rules of one area (category) through decorators."""

    def __init__(self, category: str) -> None:
        self.category = category
        self.rules: list[Rule] = []

    def container(
        self, meta: Meta, groups: tuple[str, ...] = ()
    ) -> Callable[[ContainerCheck], ContainerCheck]:
        chosen = groups or ("containers", "initContainers", "ephemeralContainers")
        return self._add(meta, Scope.CONTAINER, frozenset(), chosen)

    def pod(self, meta: Meta, kinds: Iterable[str] = ()) -> Callable[[PodCheck], PodCheck]:
        return self._add(meta, Scope.POD, frozenset(kinds), ())

    def object(self, meta: Meta, kinds: Iterable[str]) -> Callable[[ObjectCheck], ObjectCheck]:
        return self._add(meta, Scope.OBJECT, frozenset(kinds), ())

    def also(
        self, control_id: str, scope: Scope, kinds: Iterable[str] = ()
    ) -> Callable[[AnyCheck], AnyCheck]:
        """Register a second check for a control already declared in this registry."""
        control = next(rule.control for rule in self.rules if rule.control.id == control_id)
        groups = ("containers", "initContainers", "ephemeralContainers")

        def register(check: AnyCheck) -> AnyCheck:
            chosen = groups if scope is Scope.CONTAINER else ()
            self.rules.append(Rule(control, scope, check, frozenset(kinds), chosen))
            return check

        return register

    def _add(
        self, meta: Meta, scope: Scope, kinds: frozenset[str], groups: tuple[str, ...]
    ) -> Callable[[AnyCheck], AnyCheck]:
        def register(check: AnyCheck) -> AnyCheck:
            control = build_control(meta, self.category, check.__doc__ or "")
            self.rules.append(Rule(control, scope, check, kinds, groups))
            return check

        return register


def build_control(meta: Meta, category: str, doc: str) -> Control:
    frameworks = [_FRAMEWORK_NAMES[token] for token in meta.fw.split()]
    for section in meta.cis:
        cloud, _, number = section.rpartition(" ")
        frameworks.append(f"CIS-{cloud} {number}" if cloud else f"CIS {number}")
    return Control(
        id=meta.id,
        name=meta.name,
        description=" ".join(doc.split()),
        severity=meta.severity,
        kubescape_ids=meta.ks,
        checkov_ids=meta.ckv,
        no_mapping_reason=meta.unmapped,
        frameworks=tuple(frameworks),
        remediation=meta.fix,
        runtime=RuntimeEvidence(*meta.runtime),
        category=category,
    )


def pointer(path: Path) -> str:
    """RFC 6901 JSON pointer of a path."""
    return "".join("/" + str(step).replace("~", "~0").replace("/", "~1") for step in path)


def set_value(body: Any, path: Path, value: Any) -> Patch:
    """Ops that make `path` hold `value`, creating missing parent objects in one `add`."""
    current = body
    for depth, step in enumerate(path):
        exists = (isinstance(current, Mapping) and isinstance(step, str) and step in current) or (
            isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current)
        )
        if not exists:
            if isinstance(step, int) or not isinstance(current, Mapping):
                return _replace_parent(path, depth, value)
            return (
                {
                    "op": "add",
                    "path": pointer(path[: depth + 1]),
                    "value": _nest(path[depth + 1 :], value),
                },
            )
        current = current[step]
    return ({"op": "replace", "path": pointer(path), "value": value},)


def _replace_parent(path: Path, depth: int, value: Any) -> Patch:
    """The parent at `depth` has the wrong type: replace it with a fresh object."""
    if depth == 0 or isinstance(path[depth], int):
        return ()
    return ({"op": "replace", "path": pointer(path[:depth]), "value": _nest(path[depth:], value)},)


def _nest(rest: Path, value: Any) -> Any:
    for step in reversed(rest):
        value = {step: value}
    return value


def append_value(body: Any, list_path: Path, value: Any) -> Patch:
    """Ops that append `value` to the list at `list_path`, creating the list if needed."""
    if isinstance(dig(body, list_path), list):
        return ({"op": "add", "path": pointer(list_path) + "/-", "value": value},)
    return set_value(body, list_path, [value])


def remove_value(path: Path) -> Patch:
    return ({"op": "remove", "path": pointer(path)},)


def remove_indexes(list_path: Path, indexes: Iterable[int]) -> Patch:
    """Remove list entries, highest index first so earlier indexes stay valid."""
    return tuple(
        {"op": "remove", "path": f"{pointer(list_path)}/{i}"} for i in sorted(indexes, reverse=True)
    )


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Full LabelSelector semantics; a malformed selector matches nothing."""
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        return False
    for key, value in match_labels.items():
        if not isinstance(value, str) or labels.get(key) != value:
            return False
    return all(_expression_matches(e, labels) for e in expressions)


def _expression_matches(expression: Any, labels: Mapping[str, str]) -> bool:
    if not isinstance(expression, Mapping):
        return False
    key, operator = expression.get("key"), expression.get("operator")
    values = expression.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list):
        return False
    test = _OPERATORS.get(operator) if isinstance(operator, str) else None
    return test is not None and test(labels.get(key), key in labels, values)


_OPERATORS: Mapping[str, Callable[[str | None, bool, list[Any]], bool]] = {
    "In": lambda value, present, values: present and value in values,
    "NotIn": lambda value, present, values: not present or value not in values,
    "Exists": lambda value, present, values: present,
    "DoesNotExist": lambda value, present, values: not present,
}
