"""securityContext hardening from runtime evidence: a strategic-merge patch that drops every
capability but the used ones, makes the root filesystem read-only (emptyDir for written
directories), requires non-root and no privilege escalation, stops mounting an unread token and
points seccompProfile at the generated profile. Each change carries its evidence; each change not
made says why. Called by the servicer and `parallax harden`."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from services.policygen import hardening_evidence as evidence
from services.policygen import patch_yaml
from services.policygen.cluster import Workload
from services.policygen.domain import Profile, Readiness, WorkloadId, readiness


@dataclass(frozen=True)
class Change:
    """One change of the patch."""

    container: str
    field_path: str
    value: Any
    evidence: str
    control_ids: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    """A change considered and not made."""

    container: str
    field_path: str
    reason: str


@dataclass
class Hardening:
    """The patch under construction and, once built, its YAML and readiness."""

    workload: WorkloadId
    prefix: str
    patch: dict[str, Any] = field(default_factory=dict)
    comments: dict[patch_yaml.Path, str] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    yaml_text: str = ""
    readiness: Readiness = Readiness.INSUFFICIENT_EVIDENCE
    readiness_reason: str = ""
    container_names: list[str] = field(default_factory=list)

    def set(self, path: patch_yaml.Path, value: Any, why: str, controls: tuple[str, ...]) -> None:
        """Set `value` at `path` (below the pod spec) and record the change."""
        full = (*self._pod_path(), *path)
        node: Any = self.patch
        for step, following in itertools.pairwise(full):
            node = _child(node, step, following)
        last = full[-1]
        if isinstance(last, int):
            node.extend({} for _ in range(last + 1 - len(node)))
        node[last] = value
        self.comments[full] = why
        container = self._container(path)
        self.changes.append(Change(container, self._field(path), value, why, controls))

    def skip(self, path: patch_yaml.Path, reason: str) -> None:
        """Record a change not made."""
        self.skipped.append(Skipped(self._container(path), self._field(path), reason))

    def _pod_path(self) -> tuple[str, ...]:
        return tuple(self.prefix.split(".")) if self.prefix else ()

    def _field(self, path: patch_yaml.Path) -> str:
        text = ".".join(self._pod_path())
        for step in path:
            text += f"[{step}]" if isinstance(step, int) else f".{step}"
        return text.lstrip(".")

    def _container(self, path: patch_yaml.Path) -> str:
        if len(path) > 1 and path[0] == "containers" and isinstance(path[1], int):
            return str(self.container_names[path[1]])
        return ""


def _child(node: Any, step: str | int, following: str | int) -> Any:
    if isinstance(step, int):
        while len(node) <= step:
            node.append({})
        return node[step]
    return node.setdefault(step, [] if isinstance(following, int) else {})


POD_SPEC_PREFIX = {"Pod": "spec", "CronJob": "spec.jobTemplate.spec.template.spec"}


def harden(
    workload: WorkloadId, profiles: list[Profile], manifest: Workload | None, seccomp_path: str
) -> Hardening:
    """Build the hardening patch for `workload` from its containers' profiles."""
    result = Hardening(workload, POD_SPEC_PREFIX.get(workload.kind, "spec.template.spec"))
    containers = evidence.containers(profiles, manifest)
    result.container_names = [c.name for c in containers]
    for index, container in enumerate(containers):
        # The merge key comes first so the patch reads (and merges) per container.
        result.set(("containers", index, "name"), container.name, "", ())
        result.changes.pop()
        evidence.container_changes(result, index, container, seccomp_path, len(containers))
    evidence.pod_changes(result, profiles, manifest)
    result.yaml_text = patch_yaml.render(result.patch, result.comments)
    result.readiness, result.readiness_reason = readiness(profiles)
    return result


def value_json(change: Change) -> str:
    """Return a change's value as JSON."""
    return json.dumps(change.value)
