"""Namespace control NS-01: Pod Security Admission enforcement.

Registered on `REGISTRY` and run by `rules.evaluate` once per Namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.posture.domain import Manifest, Severity
from services.posture.rules.engine import NO_SIGNAL, Context, Hit, Meta, Registry, set_value
from services.posture.workload import as_map

REGISTRY = Registry("Namespace")
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
ENFORCING_LEVELS = frozenset({"baseline", "restricted"})


@REGISTRY.object(
    Meta(
        "NS-01", "No Pod Security Admission enforcement", Severity.MEDIUM,
        ks=("C-0192", "C-0193"), cis=("5.2.1", "5.2.2"),
        unmapped="Checkov has no Pod Security Admission label check.",
        runtime=(NO_SIGNAL, "admission-time control."),
        fix="Label the namespace pod-security.kubernetes.io/enforce: baseline (or restricted).",
    ),
    kinds=("Namespace",),
)  # fmt: skip
def psa_enforcement(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """Without an enforced Pod Security level, anyone who can create pods in the namespace can
    create privileged ones."""
    labels = as_map(as_map(manifest.body.get("metadata")).get("labels"))
    level = labels.get(ENFORCE_LABEL)
    if level not in ENFORCING_LEVELS:
        path = ("metadata", "labels", ENFORCE_LABEL)
        shown = "unset" if level is None else repr(level)
        message = f"namespace {manifest.name!r} Pod Security enforce level is {shown}"
        yield Hit(path, message, set_value(manifest.body, path, "baseline"))
