"""Miscellaneous workload controls MISC-01..MISC-03: dashboard, git-sync and CronJob inventory.

Registered on `REGISTRY` and run by `rules.evaluate` per container or pod spec.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.posture.domain import Severity
from services.posture.rules.engine import CONFIRM, USED, Context, Hit, Meta, Registry
from services.posture.workload import ContainerView, PodView, as_list, as_map, as_str

REGISTRY = Registry("Workload")
DASHBOARD = "kubernetes-dashboard"


@REGISTRY.pod(
    Meta(
        "MISC-01", "Kubernetes dashboard", Severity.LOW,
        ks=("C-0014",), ckv=("CKV_K8S_33",), fw="MITRE", cis=("GKE 5.10.1",),
        runtime=(USED, "API audit events from the dashboard ServiceAccount."),
        fix="Remove the dashboard, or keep it internal with a read-only ServiceAccount.",
    )
)  # fmt: skip
def dashboard(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """The dashboard is a classic initial-access path (exposed UI with a powerful token); other
    workloads borrowing its ServiceAccount inherit that power."""
    for c in pod.containers:
        if DASHBOARD in c.image or "kubernetesui/dashboard" in c.image:
            yield Hit((*c.path, "image"), f"container {c.name!r} runs the Kubernetes dashboard")
    if pod.service_account == DASHBOARD and not pod.manifest.name.startswith(DASHBOARD):
        message = "workload uses the kubernetes-dashboard ServiceAccount"
        yield Hit(pod.at("serviceAccountName"), message)


@REGISTRY.container(
    Meta(
        "MISC-02", "git-sync binary override (GITSYNC_GIT)", Severity.MEDIUM,
        ckv=("CKV_K8S_159",),
        runtime=(CONFIRM, "execve of the binary named by GITSYNC_GIT."),
        fix="Remove the GITSYNC_GIT environment variable.",
    )
)  # fmt: skip
def git_sync(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """GITSYNC_GIT replaces the git binary git-sync runs: arbitrary code in the sync container."""
    for index, entry in enumerate(as_list(c.body.get("env"))):
        if as_str(as_map(entry).get("name")) == "GITSYNC_GIT":
            yield Hit((*c.path, "env", index), f"container {c.name!r} sets GITSYNC_GIT")


@REGISTRY.pod(
    Meta(
        "MISC-03", "CronJob inventory (persistence)", Severity.LOW,
        ks=("C-0026",), fw="MITRE",
        unmapped="Checkov has no CronJob inventory check.",
        runtime=(CONFIRM, "exec trees of the Job pods show what the schedule actually runs."),
        fix="Review that the CronJob is expected; suppress with a reason once reviewed.",
    ),
    kinds=("CronJob",),
)  # fmt: skip
def cronjob(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """CronJobs are a persistence technique (MITRE): listed so each is reviewed once."""
    schedule = as_str(as_map(pod.manifest.body.get("spec")).get("schedule"))
    yield Hit(("spec", "schedule"), f"CronJob runs on schedule {schedule or '?'}")
