"""Image reference controls IMG-01..IMG-05: mutable tags, digests, pull policy, registries.

Registered on `REGISTRY` and run by `rules.evaluate` once per container.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from services.posture.domain import Severity
from services.posture.rules.engine import (
    CONFIRM,
    NO_SIGNAL,
    Context,
    Hit,
    Meta,
    Registry,
    set_value,
)
from services.posture.workload import ContainerView, PodView, as_str

REGISTRY = Registry("Supply chain")
DEPRECATED_REGISTRY = "k8s.gcr.io/"
REPLACEMENT_REGISTRY = "registry.k8s.io/"


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: registry host, repository, tag and digest."""

    registry: str
    repository: str
    tag: str
    digest: str


def parse_image(image: str) -> ImageRef:
    """Split `registry/repo:tag@digest`; Docker Hub is implied when no host is named."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = name[colon + 1 :] if colon > slash else ""
    name = name[:colon] if colon > slash else name
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ImageRef(first, rest, tag, digest)
    return ImageRef("docker.io", name, tag, digest)


def _image_path(c: ContainerView) -> tuple[str | int, ...]:
    return (*c.path, "image")


@REGISTRY.container(
    Meta(
        "IMG-01", "Mutable image tag (latest or none)", Severity.LOW,
        ks=("C-0075",), ckv=("CKV_K8S_14",), fw="DO",
        runtime=(CONFIRM, "the running digest (status.containerStatuses[].imageID) and drift "
                 "show what actually runs; replicas on different digests confirm the hazard."),
        fix="Pin a specific version tag, or better a digest (image@sha256:...).",
    )
)  # fmt: skip
def mutable_tag(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """`latest` or no tag means each node may run different code and rollbacks are guesswork."""
    ref = parse_image(c.image)
    if c.image and not ref.digest and ref.tag in ("", "latest"):
        shown = ref.tag or "no tag"
        yield Hit(_image_path(c), f"container {c.name!r} image {c.image!r} uses {shown}")


@REGISTRY.container(
    Meta(
        "IMG-02", "Image not pinned by digest", Severity.LOW,
        ks=("C-0306",), ckv=("CKV_K8S_43",), fw="AB",
        runtime=(CONFIRM, "the imageID digest of running containers vs the declared "
                 "reference."),
        fix="Reference the image by digest (image@sha256:...).",
    )
)  # fmt: skip
def no_digest(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """A tag can be moved to other content; only a digest pins what runs."""
    if c.image and not parse_image(c.image).digest:
        yield Hit(_image_path(c), f"container {c.name!r} image {c.image!r} has no digest")


@REGISTRY.container(
    Meta(
        "IMG-03", "imagePullPolicy not Always", Severity.LOW,
        ks=("C-0075",), ckv=("CKV_K8S_15",), fw="DO",
        runtime=(NO_SIGNAL, "pull behaviour is a kubelet event, not an in-container signal."),
        fix="Set imagePullPolicy: Always (or pin the image by digest).",
    )
)  # fmt: skip
def pull_policy(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """With a cached image and no Always policy, a node can run a stale or planted image."""
    ref = parse_image(c.image)
    if not c.image or ref.digest:
        return
    policy = as_str(c.body.get("imagePullPolicy"))
    if policy == "Always" or (not policy and ref.tag in ("", "latest")):
        return
    path = (*c.path, "imagePullPolicy")
    message = f"container {c.name!r} imagePullPolicy is {policy or 'unset (IfNotPresent)'}"
    yield Hit(path, message, set_value(pod.manifest.body, path, "Always"))


@REGISTRY.container(
    Meta(
        "IMG-04", "Image from a non-allowed or blocked registry", Severity.MEDIUM,
        ks=("C-0078", "C-0001"), fw="AB WS", cis=("EKS 5.1.4",),
        unmapped="Checkov has no registry allow-list check.",
        runtime=(NO_SIGNAL, "static supply-chain fact."),
        fix="Pull the image from an allowed registry (mirror it there).",
    )
)  # fmt: skip
def registry_policy(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Images from unvetted registries bypass the organisation's scanning and signing."""
    if not c.image:
        return
    registry = parse_image(c.image).registry
    settings = ctx.settings
    if settings.allowed_registries and registry not in settings.allowed_registries:
        yield Hit(_image_path(c), f"container {c.name!r} registry {registry} is not allowed")
    elif registry in settings.blocked_registries:
        yield Hit(_image_path(c), f"container {c.name!r} registry {registry} is blocked")


@REGISTRY.container(
    Meta(
        "IMG-05", "Deprecated k8s.gcr.io registry", Severity.MEDIUM,
        ks=("C-0253",), fw="DO",
        unmapped="Checkov has no deprecated-registry check.",
        runtime=(NO_SIGNAL, "static."),
        fix="Pull from registry.k8s.io instead of k8s.gcr.io.",
    )
)  # fmt: skip
def deprecated_registry(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """k8s.gcr.io is frozen: images there receive no security updates."""
    if c.image.startswith(DEPRECATED_REGISTRY):
        path = _image_path(c)
        replacement = REPLACEMENT_REGISTRY + c.image[len(DEPRECATED_REGISTRY) :]
        patch = set_value(pod.manifest.body, path, replacement)
        yield Hit(path, f"container {c.name!r} pulls from k8s.gcr.io", patch)
