"""Ingress controls NET-07 and NET-08: plain-HTTP ingresses and NGINX snippet annotations.

Registered on `REGISTRY` and run by `rules.evaluate` once per Ingress or ConfigMap.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.posture.domain import Manifest, Severity
from services.posture.rules.engine import (
    NO_SIGNAL,
    PARTIAL,
    Context,
    Hit,
    Meta,
    Registry,
    Scope,
    remove_value,
    set_value,
)
from services.posture.workload import as_list, as_map, as_str

REGISTRY = Registry("Network")
SNIPPET_PREFIX = "nginx.ingress.kubernetes.io/"
SNIPPET_SUFFIX = "-snippet"
ALLOW_SNIPPETS = "allow-snippet-annotations"


@REGISTRY.object(
    Meta(
        "NET-07", "Ingress without TLS", Severity.HIGH,
        ks=("C-0263",), fw="SOC2",
        unmapped="Checkov has no Ingress TLS check.",
        runtime=(PARTIAL, "plain-HTTP traffic at the ingress controller confirms; TLS may "
                 "be terminated upstream, which the pod cannot see."),
        fix="Add spec.tls with a certificate Secret for the Ingress hosts.",
    ),
    kinds=("Ingress",),
)  # fmt: skip
def no_tls(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """Without TLS, credentials and session cookies cross the network in clear text."""
    if not as_list(as_map(manifest.body.get("spec")).get("tls")):
        yield Hit(("spec", "tls"), f"Ingress {manifest.name!r} serves plain HTTP (no spec.tls)")


@REGISTRY.object(
    Meta(
        "NET-08", "NGINX ingress snippet annotations (CVE-2021-25742)", Severity.HIGH,
        ks=("C-0059",), ckv=("CKV_K8S_152", "CKV_K8S_153", "CKV_K8S_154"), fw="AB MITRE NSA",
        runtime=(NO_SIGNAL, "static."),
        fix="Remove *-snippet annotations and set allow-snippet-annotations: \"false\" in the "
            "controller ConfigMap.",
    ),
    kinds=("Ingress",),
)  # fmt: skip
def snippets(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """Snippet annotations inject raw NGINX config (even Lua) into the shared controller, which
    can read its ServiceAccount token and every Secret it serves."""
    annotations = as_map(as_map(manifest.body.get("metadata")).get("annotations"))
    for key in annotations:
        if isinstance(key, str) and key.startswith(SNIPPET_PREFIX) and key.endswith(SNIPPET_SUFFIX):
            path = ("metadata", "annotations", key)
            yield Hit(path, f"Ingress uses snippet annotation {key}", remove_value(path))


@REGISTRY.also("NET-08", Scope.OBJECT, kinds=("ConfigMap",))
def snippets_allowed(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """The ingress-nginx controller ConfigMap must not allow snippet annotations."""
    value = as_str(as_map(manifest.body.get("data")).get(ALLOW_SNIPPETS))
    if value.lower() == "true":
        path = ("data", ALLOW_SNIPPETS)
        message = "ingress-nginx ConfigMap allows snippet annotations"
        yield Hit(path, message, set_value(manifest.body, path, "false"))
