"""The posture control catalog and `evaluate`, the entry point the CLI and servicer call.

Each area module registers its controls and checks; this package assembles them into
`CONTROLS` (sorted by id) and runs them through `runner`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from services.posture.domain import Control, Manifest, ScanReport
from services.posture.rules import (
    containers,
    images,
    ingress,
    misc,
    namespace,
    network,
    pod,
    rbac,
    resources,
    secrets,
    serviceaccount,
)
from services.posture.rules.engine import Rule, RuleSettings
from services.posture.rules.runner import frameworks_of, run, select
from services.posture.suppress import SuppressionConfig

_AREAS = (containers, pod, serviceaccount, secrets, images, resources, rbac, network, ingress)
RULES: tuple[Rule, ...] = tuple(
    rule for area in (*_AREAS, namespace, misc) for rule in area.REGISTRY.rules
)
CONTROLS: tuple[Control, ...] = tuple(
    sorted({rule.control.id: rule.control for rule in RULES}.values(), key=lambda c: c.id)
)
CONTROLS_BY_ID = {control.id: control for control in CONTROLS}
FRAMEWORKS: frozenset[str] = frameworks_of(RULES)


def select_controls(frameworks: Collection[str] = ()) -> tuple[Control, ...]:
    """Controls in any of `frameworks` (all when empty); InvalidArgument for unknown names."""
    chosen = {rule.control.id for rule in select(RULES, frameworks)}
    return tuple(control for control in CONTROLS if control.id in chosen)


def evaluate(
    manifests: Sequence[Manifest],
    *,
    frameworks: Collection[str] = (),
    suppressions: SuppressionConfig | None = None,
    settings: RuleSettings | None = None,
) -> ScanReport:
    """Judge `manifests` against the catalog (optionally only some frameworks).

    Raises InvalidArgument for an unknown framework name.
    """
    rules = select(RULES, frameworks)
    return run(manifests, rules, suppressions or SuppressionConfig(), settings or RuleSettings())


__all__ = [
    "CONTROLS",
    "CONTROLS_BY_ID",
    "FRAMEWORKS",
    "RULES",
    "RuleSettings",
    "evaluate",
    "select_controls",
]
