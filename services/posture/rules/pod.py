"""Pod-spec controls POD-01..POD-10: host namespaces, host ports and paths, placement.

Registered on `REGISTRY` and run by `rules.evaluate` once per pod spec (or object).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from services.posture.domain import Manifest, Severity
from services.posture.rules.engine import (
    CONFIRM,
    EXPOSED,
    NO_SIGNAL,
    USED,
    Context,
    Hit,
    Meta,
    Registry,
    remove_value,
    set_value,
)
from services.posture.workload import POD_SPEC_PATHS, PodView, as_list, as_map, as_str

REGISTRY = Registry("Workload")
RUNTIME_SOCKETS = frozenset(
    {
        "/var/run/docker.sock", "/run/docker.sock", "/var/run/docker", "/run/containerd",
        "/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock",
        "/var/run/crio/crio.sock", "/run/crio/crio.sock", "/var/run/cri-dockerd.sock",
        "/var/run", "/run",
    }
)  # fmt: skip
CLOUD_CREDENTIAL_SUFFIXES = (
    "/etc/kubernetes/azure.json", "/.azure", "/.aws", "/.aws/credentials", "/.config/gcloud",
    "/application_default_credentials.json",
)  # fmt: skip
NAMESPACED_KINDS = frozenset(POD_SPEC_PATHS) | {
    "Service", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "Ingress",
    "NetworkPolicy", "PersistentVolumeClaim", "HorizontalPodAutoscaler", "PodDisruptionBudget",
}  # fmt: skip


def _host_flag(pod: PodView, key: str) -> Iterator[Hit]:
    if pod.bool_field(key):
        path = pod.at(key)
        yield Hit(path, f"pod spec sets {key}: true", set_value(pod.manifest.body, path, False))


@REGISTRY.pod(
    Meta(
        "POD-01", "hostPID", Severity.HIGH,
        ks=("C-0038", "C-0275"), ckv=("CKV_K8S_17", "CKV_K8S_1"), fw="AB CS NSA SEC WS",
        cis=("5.2.3",),
        runtime=(USED, "access to host PIDs: /proc/<pid> reads, kill/ptrace of host "
                 "processes, nsenter -t 1; only own-process activity means the view is unused."),
        fix="Remove hostPID or set it to false.",
    )
)  # fmt: skip
def host_pid(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """hostPID shows every node process to the pod, with their environments and /proc roots."""
    yield from _host_flag(pod, "hostPID")


@REGISTRY.pod(
    Meta(
        "POD-02", "hostIPC", Severity.HIGH,
        ks=("C-0038", "C-0276"), ckv=("CKV_K8S_18", "CKV_K8S_3"), fw="AB CS NSA SEC WS",
        cis=("5.2.4",),
        runtime=(USED, "SysV/POSIX IPC calls and /dev/shm opens touching host-owned objects."),
        fix="Remove hostIPC or set it to false.",
    )
)  # fmt: skip
def host_ipc(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """hostIPC shares the node's shared memory and message queues with the pod."""
    yield from _host_flag(pod, "hostIPC")


@REGISTRY.pod(
    Meta(
        "POD-03", "hostNetwork", Severity.HIGH,
        ks=("C-0041",), ckv=("CKV_K8S_19", "CKV_K8S_4"), fw="AB CS NSA SEC WS", cis=("5.2.5",),
        runtime=(USED, "sockets bound on node IPs, connections to node-local services "
                 "(kubelet 10250, etcd 2379, metadata), capture on host interfaces."),
        fix="Remove hostNetwork or set it to false; expose ports through a Service.",
    )
)  # fmt: skip
def host_network(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """hostNetwork bypasses NetworkPolicy and reaches node-local services such as the kubelet."""
    yield from _host_flag(pod, "hostNetwork")


@REGISTRY.pod(
    Meta(
        "POD-04", "hostPort", Severity.MEDIUM,
        ks=("C-0044", "C-0204"), ckv=("CKV_K8S_26",), fw="AB DO NSA SEC WS", cis=("5.2.13",),
        runtime=(EXPOSED, "inbound flows to the node port from outside the cluster confirm "
                 "exposure; no inbound traffic means an unused mapping."),
        fix="Remove hostPort; publish the port with a Service.",
    )
)  # fmt: skip
def host_port(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A hostPort opens the container on every node address, outside NetworkPolicy and Services."""
    for c in pod.containers:
        for index, port in enumerate(as_list(c.body.get("ports"))):
            if "hostPort" in as_map(port):
                path = (*c.path, "ports", index, "hostPort")
                message = f"container {c.name!r} maps hostPort {as_map(port).get('hostPort')}"
                yield Hit(path, message, remove_value(path))


def host_path_volumes(pod: PodView) -> Iterator[tuple[int, str, str]]:
    """(volume index, volume name, host path) of every hostPath volume."""
    for index, volume in pod.volumes():
        host_path = volume.get("hostPath")
        if isinstance(host_path, Mapping):
            yield index, as_str(volume.get("name")), as_str(host_path.get("path"))


@REGISTRY.pod(
    Meta(
        "POD-05", "hostPath volume", Severity.HIGH,
        ks=("C-0048", "C-0203"), fw="CS MITRE SEC WS", cis=("5.2.12",),
        unmapped="Checkov has no generic hostPath check (only the docker socket, CKV_K8S_27).",
        runtime=(USED, "file activity under the in-container mountPath, especially sensitive "
                 "host paths (/, /etc, /root, /var/lib/kubelet); never accessed means removable."),
        fix="Replace the hostPath volume with an emptyDir, a ConfigMap or a PersistentVolume.",
    )
)  # fmt: skip
def host_path(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A hostPath volume exposes node files to the pod; writable ones let it rewrite the node."""
    for index, _, path in host_path_volumes(pod):
        yield Hit(pod.at("volumes", index, "hostPath"), f"hostPath volume mounts {path or '?'}")


@REGISTRY.pod(
    Meta(
        "POD-06", "Writable hostPath mount", Severity.HIGH,
        ks=("C-0045",), fw="MITRE SEC WS",
        unmapped="Checkov has no hostPath readOnly check.",
        runtime=(USED, "write syscalls under the mount path; none means set readOnly, writes "
                 "to /etc, cron or kubelet dirs are active escape behaviour."),
        fix="Set readOnly: true on the volumeMount of the hostPath volume.",
    )
)  # fmt: skip
def writable_host_path(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A writable hostPath mount lets the container change node files (cron, kubelet, binaries)."""
    names = {name: path for _, name, path in host_path_volumes(pod) if name}
    for c in pod.containers:
        for index, mount in enumerate(as_list(c.body.get("volumeMounts"))):
            mount_map = as_map(mount)
            volume = as_str(mount_map.get("name"))
            if volume in names and mount_map.get("readOnly") is not True:
                path = (*c.path, "volumeMounts", index, "readOnly")
                message = f"container {c.name!r} mounts hostPath {names[volume]} writable"
                yield Hit(path, message, set_value(pod.manifest.body, path, True))


@REGISTRY.pod(
    Meta(
        "POD-07", "Container runtime socket mounted", Severity.MEDIUM,
        ks=("C-0074",), ckv=("CKV_K8S_27",), fw="DO SEC",
        runtime=(CONFIRM, "connect() on the socket path and the runtime API calls sent "
                 "confirm node takeover in use; no connects means removable."),
        fix="Remove the runtime socket hostPath volume.",
    )
)  # fmt: skip
def runtime_socket(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """The container runtime socket lets the pod start privileged containers: node takeover."""
    for index, _, path in host_path_volumes(pod):
        if path.rstrip("/") in RUNTIME_SOCKETS:
            yield Hit(pod.at("volumes", index, "hostPath", "path"), f"mounts runtime socket {path}")


@REGISTRY.pod(
    Meta(
        "POD-08", "Cloud credential host path mounted", Severity.MEDIUM,
        ks=("C-0020",), fw="MITRE",
        unmapped="Checkov has no cloud credential mount check.",
        runtime=(CONFIRM, "open() of the credential file followed by egress to cloud IAM/STS "
                 "endpoints."),
        fix="Remove the hostPath volume; use workload identity instead of node credentials.",
    )
)  # fmt: skip
def cloud_credentials(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Node cloud credentials on a hostPath give the pod the node's cloud identity."""
    for index, _, path in host_path_volumes(pod):
        if path.rstrip("/").endswith(CLOUD_CREDENTIAL_SUFFIXES):
            path_field = pod.at("volumes", index, "hostPath", "path")
            yield Hit(path_field, f"mounts cloud credentials from {path}")


@REGISTRY.pod(
    Meta(
        "POD-09", "Naked pod (no controller)", Severity.LOW,
        ks=("C-0073",), fw="DO",
        unmapped="Checkov has no naked-pod check.",
        runtime=(NO_SIGNAL, "ownership is visible from the API object, not from syscalls."),
        fix="Run the pod through a Deployment, StatefulSet, DaemonSet or Job.",
    ),
    kinds=("Pod",),
)  # fmt: skip
def naked_pod(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A Pod without a controller is not rescheduled or rolled out, and is easy to leave behind."""
    if not as_list(as_map(pod.manifest.body.get("metadata")).get("ownerReferences")):
        yield Hit(("metadata", "ownerReferences"), "pod has no controller (ownerReferences)")


@REGISTRY.object(
    Meta(
        "POD-10", "Object in the default namespace", Severity.LOW,
        ks=("C-0061", "C-0212"), ckv=("CKV_K8S_21",), fw="AB DO", cis=("5.7.4",),
        runtime=(NO_SIGNAL, "placement fact; no runtime signal."),
        fix="Set metadata.namespace to a dedicated namespace.",
    ),
    kinds=NAMESPACED_KINDS,
)  # fmt: skip
def default_namespace(manifest: Manifest, ctx: Context) -> Iterator[Hit]:
    """The default namespace mixes unrelated apps under shared policies and service accounts."""
    if manifest.namespace not in ("", "default"):
        return
    if (manifest.kind, manifest.name) in (("ServiceAccount", "default"), ("Service", "kubernetes")):
        return
    shown = "default" if manifest.namespace else "unset (default)"
    yield Hit(("metadata", "namespace"), f"{manifest.kind} namespace is {shown}")
