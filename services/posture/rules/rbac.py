"""RBAC controls RBAC-01..RBAC-19, judged per subject with bindings joined to their roles.

Bindings are resolved by `rbac_join` against the scanned and built-in ClusterRoles; roles no
binding in the scan references are judged on their own rules.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from services.posture.domain import Manifest, Severity
from services.posture.rules.engine import (
    CONFIRM,
    USED,
    Context,
    Hit,
    Meta,
    ObjectCheck,
    Registry,
    Scope,
    remove_indexes,
)
from services.posture.rules.rbac_join import (
    BINDING_KINDS,
    CORE_GROUPS,
    ROLE_KINDS,
    Predicate,
    admin_equivalent,
    allows,
    bound_roles,
    first_rule,
    index,
    resolve,
    resource_matches,
    rules_of,
    subjects,
)
from services.posture.workload import as_map, as_str, effective_namespace, string_list

REGISTRY = Registry("Access control")


def _binding_check(predicate: Predicate, what: str) -> ObjectCheck:
    def check(binding: Manifest, ctx: Context) -> Iterator[Hit]:
        target = resolve(binding, index(ctx))
        rule = None if target is None else first_rule(target.rules, predicate)
        if target is None or rule is None:
            return
        for subject in subjects(binding):
            path = (
                f"{binding.kind}/{binding.name} subjects[{subject.index}] -> "
                f"{target.kind}/{target.name} rules[{rule}]"
            )
            patch = remove_indexes(("subjects",), [subject.index])
            yield Hit(path, f"{subject.describe()} can {what}", patch)

    return check


def _role_check(predicate: Predicate, what: str) -> ObjectCheck:
    def check(role: Manifest, ctx: Context) -> Iterator[Hit]:
        namespace = effective_namespace(role) if role.kind == "Role" else ""
        if (role.kind, namespace, role.name) in bound_roles(ctx):
            return
        rules = rules_of(role)
        rule = first_rule(rules, predicate)
        if rule is not None:
            message = f"{role.kind} {role.name} lets its subjects {what} (no binding in the scan)"
            yield Hit(("rules", rule), message, remove_indexes(("rules",), [rule]))

    return check


def _capability(meta: Meta, doc: str, what: str, predicate: Predicate) -> None:
    """Register a capability control on bindings (per subject) and on unbound roles."""
    binding_check = _binding_check(predicate, what)
    binding_check.__doc__ = doc
    REGISTRY.object(meta, kinds=BINDING_KINDS)(binding_check)
    REGISTRY.also(meta.id, Scope.OBJECT, kinds=ROLE_KINDS)(_role_check(predicate, what))


def _on(
    verbs: Collection[str], resources: Collection[str], groups: Collection[str] = CORE_GROUPS
) -> Predicate:
    return lambda rule: allows(rule, verbs, resources, groups)


_AUDIT = "API audit log of the subject (and token reads if it is a ServiceAccount)"
_CAPABILITIES: tuple[tuple[Meta, str, str, Predicate], ...] = (
    (
        Meta("RBAC-01", "Admin-equivalent or cluster-admin binding", Severity.MEDIUM,
             ks=("C-0035", "C-0185"), fw="AB CS MITRE NSA SEC SOC2", cis=("5.1.1",),
             unmapped="Checkov has no cluster-admin binding check.",
             runtime=(USED, f"{_AUDIT} shows the verbs really used; the gap to * is the "
                      "least-privilege proposal."),
             fix="Bind a role that lists the needed verbs and resources instead of "
                 "cluster-admin or wildcards."),
        "A subject bound to every verb on every resource owns the cluster (or namespace).",
        "do anything (admin-equivalent)", admin_equivalent,
    ),
    (
        Meta("RBAC-03", "Can read Secrets", Severity.HIGH,
             ks=("C-0015", "C-0186"), ckv=("CKV2_K8S_5",), fw="CS MITRE SOC2", cis=("5.1.2",),
             runtime=(USED, f"{_AUDIT}: get/list/watch on secrets."),
             fix="Remove get/list/watch on secrets, or limit it with resourceNames."),
        "Reading Secrets yields every credential and token in scope, including other "
        "ServiceAccounts'.",
        "read Secrets", _on(("get", "list", "watch"), ("secrets",)),
    ),
    (
        Meta("RBAC-04", "Can create pods", Severity.MEDIUM,
             ks=("C-0188",), fw="CS", cis=("5.1.4",),
             unmapped="Checkov has no pod-create RBAC check.",
             runtime=(USED, f"{_AUDIT}: pod create calls."),
             fix="Remove create on pods; let controllers create pods."),
        "Creating pods lets a subject run privileged pods or mount any ServiceAccount and Secret.",
        "create pods", _on(("create",), ("pods",)),
    ),
    (
        Meta("RBAC-05", "Can exec or attach into pods", Severity.MEDIUM,
             ks=("C-0002",), ckv=("CKV2_K8S_2",), fw="AB CS MITRE NSA",
             runtime=(CONFIRM, "audit pods/exec events; processes in the target whose parent "
                      "is the runtime shim (interactive shells) confirm exec use."),
             fix="Remove create on pods/exec and pods/attach."),
        "exec/attach gives a shell in any pod in scope, with its tokens and data.",
        "exec or attach into pods", _on(("create",), ("pods/exec", "pods/attach")),
    ),
    (
        Meta("RBAC-06", "Can port-forward to pods", Severity.MEDIUM,
             ks=("C-0063",), fw="AB CS",
             unmapped="Checkov has no port-forward check.",
             runtime=(USED, "audit portforward events; loopback-origin connections into the "
                      "pod."),
             fix="Remove create on pods/portforward."),
        "port-forward tunnels past NetworkPolicy straight into a pod's ports.",
        "port-forward to pods", _on(("create",), ("pods/portforward",)),
    ),
    (
        Meta("RBAC-07", "Can impersonate", Severity.MEDIUM,
             ks=("C-0065", "C-0191"), ckv=("CKV2_K8S_3",), fw="AB", cis=("5.1.8",),
             runtime=(USED, "audit events carrying impersonatedUser."),
             fix="Remove the impersonate verb."),
        "Impersonation lets a subject act as any user, group or ServiceAccount it names.",
        "impersonate users, groups or service accounts",
        _on(("impersonate",), ("users", "groups", "serviceaccounts", "uids", "userextras"),
            ("", "*", "authentication.k8s.io")),
    ),
    (
        Meta("RBAC-08", "Can bind or escalate roles", Severity.MEDIUM,
             ks=("C-0191",), ckv=("CKV_K8S_157", "CKV_K8S_158"), cis=("5.1.8",),
             runtime=(USED, "audit of role and binding writes by the subject."),
             fix="Remove bind and escalate on roles and clusterroles."),
        "bind/escalate bypass RBAC's escalation check: the subject can grant itself anything.",
        "bind or escalate roles",
        _on(("bind", "escalate"), ("roles", "clusterroles"), ("rbac.authorization.k8s.io", "*")),
    ),
    (
        Meta("RBAC-09", "Can delete workloads or Secrets", Severity.MEDIUM,
             ks=("C-0007",), fw="CS MITRE",
             unmapped="Checkov has no delete-permission check.",
             runtime=(USED, "audit delete events."),
             fix="Remove delete and deletecollection on workloads and Secrets."),
        "Delete rights allow destroying workloads and data (impact, ransom).",
        "delete workloads or Secrets",
        _on(("delete", "deletecollection"),
            ("secrets", "pods", "services", "deployments", "replicasets", "daemonsets",
             "statefulsets", "jobs", "cronjobs"), ("", "*", "apps", "batch")),
    ),
    (
        Meta("RBAC-10", "Can delete Events", Severity.MEDIUM,
             ks=("C-0031",), fw="MITRE",
             unmapped="Checkov has no event-deletion check.",
             runtime=(USED, "audit delete on events."),
             fix="Remove delete on events."),
        "Deleting Events erases the trail of an intrusion (anti-forensics).",
        "delete Events",
        _on(("delete", "deletecollection"), ("events",), ("", "*", "events.k8s.io")),
    ),
    (
        Meta("RBAC-11", "Can modify ConfigMaps", Severity.MEDIUM,
             ks=("C-0037",), fw="MITRE",
             unmapped="Checkov has no ConfigMap-write check.",
             runtime=(USED, "audit updates to ConfigMaps such as kube-system/coredns."),
             fix="Remove update and patch on configmaps (or limit by resourceNames)."),
        "Writing ConfigMaps such as coredns allows DNS poisoning and config tampering.",
        "modify ConfigMaps", _on(("update", "patch"), ("configmaps",)),
    ),
    (
        Meta("RBAC-12", "Can create PersistentVolumes", Severity.MEDIUM,
             ks=("C-0278",), cis=("5.1.9",),
             unmapped="Checkov has no PersistentVolume-create check.",
             runtime=(USED, "audit PersistentVolume creates."),
             fix="Remove create on persistentvolumes; use dynamic provisioning."),
        "A PersistentVolume can be a hostPath: creating one mounts node files.",
        "create PersistentVolumes", _on(("create",), ("persistentvolumes",)),
    ),
    (
        Meta("RBAC-13", "Access to nodes/proxy", Severity.MEDIUM,
             ks=("C-0279",), ckv=("CKV2_K8S_2",), cis=("5.1.10",),
             runtime=(USED, "audit nodes/proxy requests (kubelet-side exec is invisible to "
                      "the API audit)."),
             fix="Remove access to nodes/proxy."),
        "nodes/proxy reaches the kubelet API directly, including exec, bypassing audit.",
        "reach the kubelet through nodes/proxy",
        _on(("get", "create", "connect"), ("nodes/proxy",)),
    ),
    (
        Meta("RBAC-14", "Can approve CSRs", Severity.MEDIUM,
             ks=("C-0280",), ckv=("CKV_K8S_156",), cis=("5.1.11",),
             runtime=(USED, "audit CSR approvals."),
             fix="Remove update on certificatesigningrequests/approval."),
        "Approving CSRs mints client certificates for any identity, including nodes.",
        "approve certificate signing requests",
        _on(("update", "patch"), ("certificatesigningrequests/approval",),
            ("certificates.k8s.io", "*")),
    ),
    (
        Meta("RBAC-15", "Can modify admission webhooks", Severity.MEDIUM,
             ks=("C-0281",), ckv=("CKV_K8S_155",), cis=("5.1.12",),
             runtime=(USED, "audit webhook configuration writes."),
             fix="Remove write verbs on validating- and mutatingwebhookconfigurations."),
        "Webhook configs see and can rewrite every admitted object, or switch off policy.",
        "modify admission webhooks",
        _on(("create", "update", "patch", "delete"),
            ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"),
            ("admissionregistration.k8s.io", "*")),
    ),
    (
        Meta("RBAC-16", "Can mint ServiceAccount tokens", Severity.MEDIUM,
             ks=("C-0282",), cis=("5.1.13",),
             unmapped="Checkov has no TokenRequest check.",
             runtime=(USED, "audit TokenRequest calls."),
             fix="Remove create on serviceaccounts/token."),
        "TokenRequest mints tokens for any ServiceAccount in scope: its permissions follow.",
        "mint ServiceAccount tokens", _on(("create",), ("serviceaccounts/token",)),
    ),
    (
        Meta("RBAC-19", "Can write services/status (CVE-2020-8554)", Severity.MEDIUM,
             ckv=("CKV2_K8S_4",),
             runtime=(USED, "audit writes to services/status."),
             fix="Remove update and patch on services/status."),
        "Writing services/status sets load-balancer IPs that intercept cluster traffic "
        "(CVE-2020-8554).",
        "write services/status", _on(("update", "patch"), ("services/status",)),
    ),
)  # fmt: skip

for _meta, _doc, _what, _predicate in _CAPABILITIES:
    _capability(_meta, _doc, _what, _predicate)


@REGISTRY.object(
    Meta(
        "RBAC-02", "Wildcards in Role or ClusterRole rules", Severity.HIGH,
        ks=("C-0187",), ckv=("CKV_K8S_49",), fw="CS", cis=("5.1.3",),
        runtime=(USED, f"{_AUDIT} gives the concrete verbs and resources to replace *."),
        fix="Replace * in apiGroups, resources and verbs with explicit lists.",
    ),
    kinds=ROLE_KINDS,
)  # fmt: skip
def wildcards(role: Manifest, ctx: Context) -> Iterator[Hit]:
    """A * grants every current and future resource or verb, including ones added by CRDs.
    Every rule is checked (Checkov reads only rules[0])."""
    for number, rule in enumerate(rules_of(role)):
        for key in ("apiGroups", "resources", "verbs"):
            if "*" in string_list(rule.get(key)):
                yield Hit(
                    ("rules", number, key), f"{role.kind} {role.name} rules[{number}] {key} has *"
                )


_ANONYMOUS = frozenset({"system:anonymous", "system:unauthenticated"})


@REGISTRY.object(
    Meta(
        "RBAC-17", "Anonymous or unauthenticated binding", Severity.HIGH,
        ks=("C-0262",), fw="CS SEC", cis=("GKE 4.1.8",),
        unmapped="Checkov has no anonymous-binding check.",
        runtime=(CONFIRM, "audit events with user system:anonymous."),
        fix="Remove system:anonymous and system:unauthenticated from the binding's subjects.",
    ),
    kinds=BINDING_KINDS,
)  # fmt: skip
def anonymous(binding: Manifest, ctx: Context) -> Iterator[Hit]:
    """Binding anonymous users hands the role to anyone who can reach the API server."""
    target = as_str(as_map(binding.body.get("roleRef")).get("name"))
    for subject in subjects(binding):
        if subject.name in _ANONYMOUS:
            path = f"{binding.kind}/{binding.name} subjects[{subject.index}]"
            message = f"{subject.describe()} is bound to {target or '?'}"
            yield Hit(path, message, remove_indexes(("subjects",), [subject.index]))


_SENSITIVE = (
    "pods", "pods/exec", "pods/attach", "pods/portforward", "deployments", "statefulsets",
    "daemonsets", "jobs", "cronjobs", "nodes", "secrets",
)  # fmt: skip


def _touches_sensitive(rule: Mapping[str, Any]) -> bool:
    resources = string_list(rule.get("resources"))
    return any(resource_matches(resources, wanted) for wanted in _SENSITIVE)


@REGISTRY.object(
    Meta(
        "RBAC-18", "system:authenticated has an elevated role", Severity.HIGH,
        ks=("C-0265",), fw="CS SEC", cis=("GKE 4.1.10",),
        unmapped="Checkov has no system:authenticated check.",
        runtime=(USED, "audit events by arbitrary authenticated users on those resources."),
        fix="Bind the role to specific users or groups instead of system:authenticated.",
    ),
    kinds=BINDING_KINDS,
)  # fmt: skip
def all_authenticated(binding: Manifest, ctx: Context) -> Iterator[Hit]:
    """system:authenticated includes every ServiceAccount and any identity of the cloud IdP."""
    target = resolve(binding, index(ctx))
    rule = None if target is None else first_rule(target.rules, _touches_sensitive)
    if target is None or rule is None:
        return
    for subject in subjects(binding):
        if subject.kind == "Group" and subject.name == "system:authenticated":
            path = (
                f"{binding.kind}/{binding.name} subjects[{subject.index}] -> "
                f"{target.kind}/{target.name} rules[{rule}]"
            )
            message = "every authenticated identity can reach workloads, nodes or Secrets"
            yield Hit(path, message, remove_indexes(("subjects",), [subject.index]))
