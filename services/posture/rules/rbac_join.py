"""The RBAC join: bindings resolved to their roles and subjects, and rule predicates.

Shared by `rbac.py` (per-subject controls) and `serviceaccount.py` (a workload's token); roles
come from the scan, else from the built-in ClusterRoles of `builtin_roles`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.posture.domain import Manifest
from services.posture.rules.builtin_roles import BUILTIN_CLUSTER_ROLES
from services.posture.rules.engine import Context, selector_matches
from services.posture.workload import as_list, as_map, as_str, effective_namespace, string_list

BINDING_KINDS = ("RoleBinding", "ClusterRoleBinding")
ROLE_KINDS = ("Role", "ClusterRole")
Rules = tuple[Mapping[str, Any], ...]
Predicate = Callable[[Mapping[str, Any]], bool]
CORE_GROUPS = ("", "*")


@dataclass(frozen=True)
class Subject:
    """One entry of a binding's `subjects`, namespace filled in for ServiceAccounts."""

    index: int
    kind: str
    name: str
    namespace: str

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.kind == "ServiceAccount" else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class RoleTarget:
    """The role a binding grants, with its rules (from the scan or the built-ins)."""

    kind: str
    name: str
    rules: Rules


@dataclass(frozen=True)
class RbacIndex:
    """Roles by name and the set of roles some binding in the scan references."""

    roles: Mapping[tuple[str, str], Rules]
    cluster_roles: Mapping[str, Rules]
    bound: frozenset[tuple[str, str, str]]


def rules_of(manifest: Manifest) -> Rules:
    return tuple(as_map(rule) for rule in as_list(manifest.body.get("rules")))


def _members(manifest: Manifest, scanned: Sequence[Manifest]) -> list[Manifest]:
    """The ClusterRoles an aggregated ClusterRole selects with its clusterRoleSelectors."""
    selectors = as_list(as_map(manifest.body.get("aggregationRule")).get("clusterRoleSelectors"))
    members = []
    for other in scanned if selectors else ():
        labels = as_map(as_map(other.body.get("metadata")).get("labels"))
        text_labels = {k: v for k, v in labels.items() if isinstance(v, str)}
        if other is not manifest and any(selector_matches(s, text_labels) for s in selectors):
            members.append(other)
    return members


def build_index(ctx: Context) -> RbacIndex:
    scanned = list(ctx.of_kind("ClusterRole"))
    cluster_roles: dict[str, Rules] = dict(BUILTIN_CLUSTER_ROLES)
    members = {manifest.name: _members(manifest, scanned) for manifest in scanned}
    for manifest in scanned:
        aggregated = (rule for member in members[manifest.name] for rule in rules_of(member))
        cluster_roles[manifest.name] = (*rules_of(manifest), *aggregated)
    roles = {(effective_namespace(m), m.name): rules_of(m) for m in ctx.of_kind("Role")}
    bound = set()
    for binding in ctx.of_kind(*BINDING_KINDS):
        ref = as_map(binding.body.get("roleRef"))
        kind, name = as_str(ref.get("kind")), as_str(ref.get("name"))
        bound.add((kind, effective_namespace(binding) if kind == "Role" else "", name))
        bound.update(("ClusterRole", "", m.name) for m in members.get(name, ()) if kind != "Role")
    return RbacIndex(roles, cluster_roles, frozenset(bound))


def index(ctx: Context) -> RbacIndex:
    return ctx.index("rbac", build_index)


def resolve(binding: Manifest, rbac: RbacIndex) -> RoleTarget | None:
    """The role a binding points at, or None when it is neither scanned nor built in."""
    ref = as_map(binding.body.get("roleRef"))
    kind, name = as_str(ref.get("kind")), as_str(ref.get("name"))
    if kind == "ClusterRole" and name in rbac.cluster_roles:
        return RoleTarget(kind, name, rbac.cluster_roles[name])
    if kind == "Role" and binding.kind == "RoleBinding":
        rules = rbac.roles.get((effective_namespace(binding), name))
        return None if rules is None else RoleTarget(kind, name, rules)
    return None


def subjects(binding: Manifest) -> list[Subject]:
    out = []
    for index, entry in enumerate(as_list(binding.body.get("subjects"))):
        subject = as_map(entry)
        kind, name = as_str(subject.get("kind")), as_str(subject.get("name"))
        namespace = as_str(subject.get("namespace"))
        if kind == "ServiceAccount" and not namespace:
            namespace = effective_namespace(binding)
        if kind and name:
            out.append(Subject(index, kind, name, namespace))
    return out


def service_account_groups(namespace: str) -> frozenset[str]:
    """Groups every ServiceAccount token of `namespace` belongs to."""
    return frozenset(
        {"system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"}
    )


Grant = tuple[Manifest, RoleTarget]


def _grants_by_subject(ctx: Context) -> Mapping[tuple[str, str, str], list[Grant]]:
    """(subject kind, namespace, name) -> every resolvable (binding, role) granted to it."""
    rbac = index(ctx)
    table: dict[tuple[str, str, str], list[Grant]] = {}
    for binding in ctx.of_kind(*BINDING_KINDS):
        target = resolve(binding, rbac)
        for subject in subjects(binding) if target is not None else ():
            namespace = subject.namespace if subject.kind == "ServiceAccount" else ""
            grants = table.setdefault((subject.kind, namespace, subject.name), [])
            if all(existing is not binding for existing, _ in grants):
                grants.append((binding, target))  # type: ignore[arg-type]
    return table


def service_account_grants(ctx: Context, namespace: str, name: str) -> list[Grant]:
    """Bindings (with their roles) that reach a ServiceAccount directly or through its groups."""
    table = ctx.index("rbac-subjects", _grants_by_subject)
    keys = [("ServiceAccount", namespace, name)]
    keys += [("Group", "", group) for group in sorted(service_account_groups(namespace))]
    found: dict[int, Grant] = {}
    for key in keys:
        for binding, target in table.get(key, ()):
            found.setdefault(id(binding), (binding, target))
    return list(found.values())


def resource_matches(granted: Collection[str], wanted: str) -> bool:
    if "*" in granted or wanted in granted:
        return True
    base, _, sub = wanted.partition("/")
    return bool(sub) and (f"{base}/*" in granted or f"*/{sub}" in granted)


def allows(
    rule: Mapping[str, Any],
    verbs: Collection[str],
    resources: Collection[str],
    groups: Collection[str] = CORE_GROUPS,
) -> bool:
    """Whether `rule` grants any of `verbs` on any of `resources` in any of `groups`."""
    rule_verbs = string_list(rule.get("verbs"))
    rule_groups = string_list(rule.get("apiGroups"))
    rule_resources = string_list(rule.get("resources"))
    return (
        ("*" in rule_verbs or any(v in rule_verbs for v in verbs))
        and ("*" in rule_groups or any(g in rule_groups for g in groups))
        and any(resource_matches(rule_resources, r) for r in resources)
    )


def admin_equivalent(rule: Mapping[str, Any]) -> bool:
    """verbs, resources and apiGroups all wildcards (core group counts)."""
    return (
        "*" in string_list(rule.get("verbs"))
        and "*" in string_list(rule.get("resources"))
        and bool({"*", ""} & set(string_list(rule.get("apiGroups"))))
    )


def first_rule(rules: Rules, predicate: Predicate) -> int | None:
    return next((i for i, rule in enumerate(rules) if predicate(rule)), None)


def bound_roles(ctx: Context) -> frozenset[tuple[str, str, str]]:
    """(kind, namespace, name) of every role some binding in the scan references."""
    return index(ctx).bound
