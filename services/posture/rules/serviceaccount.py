"""ServiceAccount controls SA-01..SA-06: token automount and what the workload's token can do.

Uses the effective automount of `workload.PodView` and the RBAC join of `rbac.py`; registered on
`REGISTRY` and run by `rules.evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from services.posture.domain import Manifest, Severity
from services.posture.rules import rbac_join as rbac
from services.posture.rules.engine import (
    CONFIRM,
    NO_SIGNAL,
    USED,
    Context,
    Hit,
    Meta,
    Registry,
    Scope,
    remove_indexes,
    set_value,
)
from services.posture.workload import PodView, as_str

REGISTRY = Registry("Access control")
_AUTOMOUNT_EVIDENCE = (
    "opens of the service-account token file and connections to the API server; never opened "
    "means automount can be switched off safely."
)


def _automount_hit(pod: PodView, message: str) -> Hit:
    patch = set_value(pod.manifest.body, pod.automount.path, False)
    return Hit(pod.automount.path, message, patch)


@REGISTRY.pod(
    Meta(
        "SA-01", "ServiceAccount token automounted", Severity.MEDIUM,
        ks=("C-0034", "C-0190"), ckv=("CKV_K8S_38",), fw="AB NSA SEC WS", cis=("5.1.6",),
        runtime=(USED, _AUTOMOUNT_EVIDENCE),
        fix="Set automountServiceAccountToken: false on the pod spec (or the ServiceAccount) "
            "unless the app calls the API.",
    )
)  # fmt: skip
def automount(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A mounted token lets anyone with code execution in the pod call the API server as its
    ServiceAccount. The pod's setting wins over the ServiceAccount's."""
    if pod.automount.value:
        message = (
            f"ServiceAccount {pod.service_account!r} token is mounted (from {pod.automount_source})"
        )
        yield _automount_hit(pod, message)


def _grants(pod: PodView, ctx: Context, predicate: rbac.Predicate) -> Iterator[str]:
    """'Binding -> Role rules[i]' for every grant to the pod's ServiceAccount that matches."""
    for binding, target in rbac.service_account_grants(ctx, pod.namespace, pod.service_account):
        rule = rbac.first_rule(target.rules, predicate)
        if rule is not None:
            yield f"{binding.kind}/{binding.name} -> {target.kind}/{target.name} rules[{rule}]"


def _token_with(pod: PodView, ctx: Context, predicate: rbac.Predicate, what: str) -> Iterator[Hit]:
    """A hit when the pod's mounted token has a grant matching `predicate`, which `what` names.

    The grants depend on the ServiceAccount alone, and many pods share one: they are found once
    per (what, ServiceAccount).
    """
    if not pod.automount.value:
        return
    key = (what, pod.namespace, pod.service_account)
    chains = ctx.memo("sa-token-grants", key, lambda: list(_grants(pod, ctx, predicate)))
    if chains:
        message = f"mounted token of {pod.service_account!r} {what} via {chains[0]}"
        yield _automount_hit(pod, message + (f" and {len(chains) - 1} more" if chains[1:] else ""))


@REGISTRY.pod(
    Meta(
        "SA-02", "Token mounted and ServiceAccount has RBAC bindings", Severity.HIGH,
        ks=("C-0261",), fw="SEC",
        unmapped="Checkov does not join workloads to RBAC bindings.",
        runtime=(USED, "token file reads plus API audit events for the ServiceAccount; the "
                 "verbs actually called vs granted give a least-privilege proposal."),
        fix="Set automountServiceAccountToken: false, or trim the ServiceAccount's bindings.",
    )
)  # fmt: skip
def token_with_bindings(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A mounted token whose ServiceAccount is bound to roles turns code execution in the pod
    into API access."""
    yield from _token_with(pod, ctx, lambda rule: True, "has RBAC permissions")


@REGISTRY.pod(
    Meta(
        "SA-04", "Workload ServiceAccount has an admin-equivalent role", Severity.MEDIUM,
        ks=("C-0272",), fw="SEC",
        unmapped="Checkov does not join workloads to RBAC bindings.",
        runtime=(USED, "as SA-02; an admin token actually read and used is critical, never "
                 "read means remove automount first."),
        fix="Bind the ServiceAccount to a least-privilege role and turn off automount.",
    )
)  # fmt: skip
def token_admin(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A pod holding an admin-equivalent token makes any RCE in it a cluster compromise."""
    yield from _token_with(pod, ctx, rbac.admin_equivalent, "is admin-equivalent")


def _takeover(rule: Mapping[str, Any]) -> bool:
    return rbac.allows(rule, ("create", "update", "patch"), ("pods",)) or rbac.allows(
        rule, ("get", "list", "watch"), ("secrets",)
    )


@REGISTRY.pod(
    Meta(
        "SA-05", "Workload ServiceAccount can take over the cluster", Severity.MEDIUM,
        ks=("C-0267",), fw="SEC",
        unmapped="Checkov does not join workloads to RBAC bindings.",
        runtime=(USED, "as SA-02: secret reads and pod creates in the audit log."),
        fix="Remove pod-write and secret-read permissions from the ServiceAccount's roles.",
    )
)  # fmt: skip
def token_takeover(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A token that can create pods or read Secrets escalates to any identity in scope."""
    yield from _token_with(pod, ctx, _takeover, "can create pods or read Secrets")


@REGISTRY.object(
    Meta(
        "SA-03", "Default ServiceAccount actively used", Severity.MEDIUM,
        ks=("C-0189",), ckv=("CKV_K8S_41", "CKV_K8S_42"), cis=("5.1.5",),
        runtime=(CONFIRM, "API audit events authenticated as system:serviceaccount:<ns>:"
                 "default; token reads from pods running as default."),
        fix="Set automountServiceAccountToken: false on the default ServiceAccount and give "
            "workloads their own ServiceAccount.",
    ),
    kinds=("ServiceAccount",),
)  # fmt: skip
def default_account(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """The default ServiceAccount is shared by every pod that names none; granting it anything
    grants it to all of them."""
    if (
        manifest.name == "default"
        and manifest.body.get("automountServiceAccountToken") is not False
    ):
        path = ("automountServiceAccountToken",)
        message = "default ServiceAccount does not set automountServiceAccountToken: false"
        yield Hit(path, message, set_value(manifest.body, path, False))


@REGISTRY.also("SA-03", Scope.OBJECT, kinds=rbac.BINDING_KINDS)
def default_account_bound(binding: Manifest, ctx: Context) -> Iterator[Hit]:
    """Roles bound to a default ServiceAccount reach every pod of its namespace."""
    for subject in rbac.subjects(binding):
        if subject.kind == "ServiceAccount" and subject.name == "default":
            path = f"{binding.kind}/{binding.name} subjects[{subject.index}]"
            message = f"{subject.describe()} is bound to a role"
            yield Hit(path, message, remove_indexes(("subjects",), [subject.index]))


@REGISTRY.pod(
    Meta(
        "SA-06", "Missing or deprecated serviceAccount reference", Severity.MEDIUM,
        ks=("C-0307", "C-0294"), fw="DO",
        unmapped="Checkov has no ServiceAccount reference check.",
        runtime=(NO_SIGNAL, "admission and hygiene; the pod fails to start or silently uses "
                 "another account."),
        fix="Use serviceAccountName (not serviceAccount) and create the ServiceAccount it names.",
    )
)  # fmt: skip
def account_reference(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A deprecated or dangling serviceAccount reference means the pod runs as something else
    than intended. Missing accounts are judged only when the scan has accounts in that namespace."""
    deprecated = as_str(pod.spec.get("serviceAccount"))
    if deprecated:
        yield Hit(pod.at("serviceAccount"), f"deprecated serviceAccount {deprecated!r} is set")
    name = as_str(pod.spec.get("serviceAccountName"))
    known = ctx.index("sa-namespaces", _namespaces_with_accounts)
    dangling = (pod.namespace, name) not in ctx.service_accounts
    if name and name != "default" and pod.namespace in known and dangling:
        message = f"ServiceAccount {name!r} is not defined in namespace {pod.namespace!r}"
        yield Hit(pod.at("serviceAccountName"), message)


def _namespaces_with_accounts(ctx: Context) -> frozenset[str]:
    return frozenset(namespace for namespace, _ in ctx.service_accounts)
