"""Runs the registered rules over a set of manifests and assembles the ScanReport.

Called through `rules.evaluate`; builds the shared Context and one PodView per workload, applies
framework filters and suppressions, and turns a failing check into a ScanError, never a crash.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.posture.domain import (
    Finding,
    InvalidArgument,
    Manifest,
    ObjectRef,
    ScanError,
    ScanReport,
    Suppression,
)
from services.posture.rules.engine import Context, Hit, Rule, RuleSettings, Scope
from services.posture.suppress import SuppressionConfig, annotation_suppressions
from services.posture.workload import (
    Path,
    PodView,
    as_map,
    effective_namespace,
    pod_view,
    render_path,
)

# Kinds no control judges directly but that other controls look up.
CONTEXT_KINDS = frozenset(
    {
        "ServiceAccount", "NetworkPolicy", "CiliumNetworkPolicy",
        "CiliumClusterwideNetworkPolicy", "Role", "ClusterRole", "RoleBinding",
        "ClusterRoleBinding", "Service", "Ingress", "Namespace",
    }
)  # fmt: skip


@dataclass(frozen=True)
class RuleSet:
    """Rules grouped by how they are run."""

    container: tuple[Rule, ...]
    pod: tuple[Rule, ...]
    objects: Mapping[str, tuple[Rule, ...]]

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> RuleSet:
        objects: dict[str, list[Rule]] = defaultdict(list)
        container, pod = [], []
        for rule in rules:
            if rule.scope is Scope.CONTAINER:
                container.append(rule)
            elif rule.scope is Scope.POD:
                pod.append(rule)
            else:
                for kind in rule.kinds:
                    objects[kind].append(rule)
        return cls(tuple(container), tuple(pod), {k: tuple(v) for k, v in objects.items()})


def frameworks_of(rules: Iterable[Rule]) -> frozenset[str]:
    """Every name a `--framework` filter may use: full names and their first word."""
    names: set[str] = set()
    for rule in rules:
        for framework in rule.control.frameworks:
            names |= {framework.lower(), framework.split(" ")[0].lower()}
    return frozenset(names)


def select(rules: Sequence[Rule], frameworks: Collection[str]) -> tuple[Rule, ...]:
    """Rules whose control belongs to one of `frameworks` (case-insensitive; "cis" = all CIS)."""
    if not frameworks:
        return tuple(rules)
    wanted = {name.strip().lower() for name in frameworks}
    unknown = wanted - frameworks_of(rules)
    if unknown:
        raise InvalidArgument(f"unknown framework: {', '.join(sorted(unknown))}")
    return tuple(
        rule
        for rule in rules
        if any({f.lower(), f.split(" ")[0].lower()} & wanted for f in rule.control.frameworks)
    )


def build_context(
    manifests: Sequence[Manifest], settings: RuleSettings
) -> tuple[Context, list[PodView | None]]:
    """The scan's Context, and each manifest's PodView (None for kinds without a pod spec)."""
    by_kind: dict[str, list[Manifest]] = defaultdict(list)
    for manifest in manifests:
        by_kind[manifest.kind].append(manifest)
    accounts = {(effective_namespace(m), m.name): m.body for m in by_kind.get("ServiceAccount", [])}
    views = [pod_view(manifest, accounts) for manifest in manifests]
    pod_views = tuple(view for view in views if view is not None)
    return Context(settings, by_kind, accounts, pod_views), views


def run(
    manifests: Sequence[Manifest],
    rules: Sequence[Rule],
    suppressions: SuppressionConfig,
    settings: RuleSettings,
) -> ScanReport:
    ctx, views = build_context(manifests, settings)
    rule_set = RuleSet.of(rules)
    findings: dict[str, Finding] = {}
    errors: list[ScanError] = []
    ignored = 0
    rendered: dict[Path, str] = {}
    for manifest, view in zip(manifests, views, strict=True):
        known = view is not None or manifest.kind in rule_set.objects
        ignored += not (known or manifest.kind in CONTEXT_KINDS)
        metadata = as_map(manifest.body.get("metadata"))
        reasons, problems = annotation_suppressions(as_map(metadata.get("annotations")))
        errors.extend(ScanError(manifest.location, problem) for problem in problems)
        ref = manifest.ref
        for rule, hit in _hits(manifest, view, rule_set, ctx, errors):
            suppression = _suppression(rule.control.id, ref, reasons, suppressions)
            finding = _finding(rule, hit, ref, _field_path(hit, rendered), suppression)
            findings.setdefault(finding.key, finding)
    ordered = sorted(findings.values(), key=_order)
    return ScanReport(tuple(ordered), tuple(errors), len(manifests), ignored)


def _applicable(view: PodView | None, kind: str, rule_set: RuleSet) -> Iterable[Rule]:
    if view is not None:
        yield from (r for r in rule_set.pod if not r.kinds or kind in r.kinds)
        yield from rule_set.container
    yield from rule_set.objects.get(kind, ())


def _hits(
    manifest: Manifest,
    view: PodView | None,
    rule_set: RuleSet,
    ctx: Context,
    errors: list[ScanError],
) -> list[tuple[Rule, Hit]]:
    out: list[tuple[Rule, Hit]] = []
    for rule in _applicable(view, manifest.kind, rule_set):
        try:
            out.extend((rule, hit) for hit in _call(rule, manifest, view, ctx))
        except Exception as exc:  # a check bug must cost one result, not the scan
            message = f"internal error in {rule.control.id}: {type(exc).__name__}: {exc}"
            errors.append(ScanError(manifest.location, message))
    return out


def _call(rule: Rule, manifest: Manifest, view: PodView | None, ctx: Context) -> list[Hit]:
    if rule.scope is Scope.OBJECT:
        return list(rule.check(manifest, ctx))
    if view is None:
        return []
    if rule.scope is Scope.POD:
        return list(rule.check(view, ctx))
    return [
        hit
        for container in view.containers
        if container.group in rule.groups
        for hit in rule.check(view, container, ctx)
    ]


def _suppression(
    control_id: str, ref: ObjectRef, reasons: Mapping[str, str], config: SuppressionConfig
) -> Suppression | None:
    reason = reasons.get(control_id)
    if reason is not None:
        return Suppression(reason, "annotation")
    return config.match(control_id, ref)


def _field_path(hit: Hit, rendered: dict[Path, str]) -> str:
    """The hit's path as text, memoised in `rendered`: a scan renders a few hundred distinct
    paths thousands of times."""
    if isinstance(hit.path, str):
        return hit.path
    text = rendered.get(hit.path)
    if text is None:
        text = rendered[hit.path] = render_path(hit.path)
    return text


def _finding(
    rule: Rule, hit: Hit, ref: ObjectRef, path: str, suppression: Suppression | None
) -> Finding:
    return Finding(
        control_id=rule.control.id,
        severity=rule.control.severity,
        object=ref,
        field_path=path,
        message=hit.message,
        patch=hit.patch,
        suppression=suppression,
    )


def _order(finding: Finding) -> tuple[str, int, str, str, str, str, str]:
    ref = finding.object
    location = ref.location
    return (location.uri, location.document, ref.kind, ref.namespace, ref.name,
            finding.control_id, finding.field_path)  # fmt: skip
