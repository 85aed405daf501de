"""Container securityContext controls CTR-01..CTR-16, judged on effective values.

Registered on `REGISTRY` and run by `rules.evaluate` once per container or pod spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from services.posture.domain import Severity
from services.posture.rules.engine import (
    CONFIRM,
    CONFIRM_REFUTE,
    NO_SIGNAL,
    PARTIAL,
    USED,
    Context,
    Hit,
    Meta,
    Registry,
    append_value,
    remove_indexes,
    set_value,
)
from services.posture.workload import ContainerView, PodView, as_list, as_map, as_str

REGISTRY = Registry("Workload")
INSECURE_CAPABILITIES = frozenset(
    {
        "SETPCAP", "NET_ADMIN", "NET_RAW", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE",
        "SYS_ADMIN", "SYS_BOOT", "MAC_OVERRIDE", "MAC_ADMIN", "PERFMON", "BPF", "ALL",
    }
)  # fmt: skip
NON_ROOT_UID = 10001


def _raw_added(c: ContainerView) -> Sequence[Any]:
    """The container's raw `capabilities.add` list (entries may be of any type)."""
    return as_list(as_map(c.security_context.get("capabilities")).get("add"))


def _cap_indexes(c: ContainerView, names: frozenset[str]) -> list[int]:
    """Indexes in `capabilities.add` whose normalised name (no CAP_ prefix) is in `names`."""
    out = []
    for index, item in enumerate(_raw_added(c)):
        name = as_str(item).strip().upper()
        if name.removeprefix("CAP_") in names:
            out.append(index)
    return out


@REGISTRY.container(
    Meta(
        "CTR-01", "Privileged container", Severity.HIGH,
        ks=("C-0057",), ckv=("CKV_K8S_16", "CKV_K8S_2"), fw="AB CS MITRE NSA SEC WS",
        runtime=(USED, "cap_capable tracing shows whether any non-default capability "
                 "(SYS_ADMIN mount/unshare/setns, SYS_MODULE, raw device access) is exercised; "
                 "never exercised means the privilege can be removed safely."),
        fix="Set securityContext.privileged to false and add back only the specific "
            "capabilities the container needs.",
    )
)  # fmt: skip
def privileged(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """A privileged container (or one adding SYS_ADMIN) holds every capability and host device:
    a container escape is one mount away."""
    body = pod.manifest.body
    if c.sc_bool("privileged"):
        path = c.sc_path("privileged")
        yield Hit(path, f"container {c.name!r} runs privileged", set_value(body, path, False))
    for index in _cap_indexes(c, frozenset({"SYS_ADMIN"})):
        path = c.sc_path("capabilities", "add", index)
        patch = remove_indexes(c.sc_path("capabilities", "add"), [index])
        yield Hit(path, f"container {c.name!r} adds SYS_ADMIN (privileged-equivalent)", patch)


@REGISTRY.container(
    Meta(
        "CTR-02", "Allow privilege escalation", Severity.MEDIUM,
        ks=("C-0016",), ckv=("CKV_K8S_20", "CKV_K8S_5"), fw="AB NSA SEC WS",
        runtime=(USED, "execve of setuid/setgid binaries (sudo, su, ping) or an euid change "
                 "to 0 after exec; none observed means false will not break the app."),
        fix="Set securityContext.allowPrivilegeEscalation to false.",
    )
)  # fmt: skip
def privilege_escalation(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Unless allowPrivilegeEscalation is false, setuid binaries can raise a process to root
    (no_new_privs is off)."""
    if c.sc_bool("allowPrivilegeEscalation") is not False:
        path = c.sc_path("allowPrivilegeEscalation")
        message = f"container {c.name!r} does not set allowPrivilegeEscalation: false"
        yield Hit(path, message, set_value(pod.manifest.body, path, False))


@REGISTRY.container(
    Meta(
        "CTR-03", "Mutable root filesystem", Severity.LOW,
        ks=("C-0017",), ckv=("CKV_K8S_22",), fw="AB NSA SEC WS",
        runtime=(USED, "write-class file operations on the container rootfs (not volumes); "
                 "none means safe to enable, writes show which directories need an emptyDir."),
        fix="Set securityContext.readOnlyRootFilesystem to true; mount an emptyDir where the "
            "application must write.",
    )
)  # fmt: skip
def mutable_root(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """A writable root filesystem lets an intruder drop and run tools or tamper with binaries."""
    if c.sc_bool("readOnlyRootFilesystem") is not True:
        path = c.sc_path("readOnlyRootFilesystem")
        message = f"container {c.name!r} has a writable root filesystem"
        yield Hit(path, message, set_value(pod.manifest.body, path, True))


@REGISTRY.container(
    Meta(
        "CTR-04", "Container may run as root", Severity.MEDIUM,
        ks=("C-0013",), ckv=("CKV_K8S_23", "CKV_K8S_6"), fw="AB CS NSA SEC WS",
        runtime=(CONFIRM_REFUTE, "process credentials at exec: uid 0 confirms; a non-zero "
                 "uid while the spec is silent means the image USER is non-root already."),
        fix="Set securityContext.runAsNonRoot: true (and a non-zero runAsUser) on the pod or "
            "the container.",
    )
)  # fmt: skip
def runs_as_root(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Root in the container is root on the node after any escape; effective runAsNonRoot and
    runAsUser (container over pod) decide."""
    user, non_root = c.run_as_user, c.run_as_non_root
    body = pod.manifest.body
    if user.value == 0:
        patch = set_value(body, c.sc_path("runAsUser"), NON_ROOT_UID)
        yield Hit(user.path, f"container {c.name!r} runs as UID 0", patch)
    elif non_root.value is not True and user.value is None:
        patch = set_value(body, c.sc_path("runAsNonRoot"), True)
        message = f"container {c.name!r} may run as root: runAsNonRoot is not true, no runAsUser"
        yield Hit(non_root.path, message, patch)


@REGISTRY.container(
    Meta(
        "CTR-05", "UID not high (< 10000) and user namespace off", Severity.LOW,
        ckv=("CKV_K8S_40",),
        runtime=(CONFIRM_REFUTE, "observed process uids and the pod's uid_map show whether "
                 "the container uid equals a host uid."),
        fix="Run as a UID >= 10000 (runAsUser) or set hostUsers: false on the pod.",
    )
)  # fmt: skip
def low_uid(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """A low UID can collide with a real host user after an escape; a user namespace avoids it."""
    if pod.bool_field("hostUsers") is False:
        return
    user = c.run_as_user
    if user.value is None or user.value < 10000:
        patch = set_value(pod.manifest.body, c.sc_path("runAsUser"), NON_ROOT_UID)
        shown = "unset" if user.value is None else str(user.value)
        yield Hit(user.path, f"container {c.name!r} UID is {shown} (< 10000)", patch)


@REGISTRY.container(
    Meta(
        "CTR-06", "Dangerous capabilities added", Severity.HIGH,
        ks=("C-0046",), ckv=("CKV_K8S_39", "CKV_K8S_25"), fw="AB NSA SEC WS",
        runtime=(USED, "per-capability cap_capable events: a capability never checked by "
                 "the kernel is removable; one exercised confirms the risk."),
        fix="Remove the capability from securityContext.capabilities.add.",
    )
)  # fmt: skip
def dangerous_capabilities(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """Capabilities such as SYS_ADMIN, NET_ADMIN, SYS_PTRACE or BPF give kernel-level powers
    that enable escapes and sniffing."""
    for index in _cap_indexes(c, INSECURE_CAPABILITIES):
        path = c.sc_path("capabilities", "add", index)
        name = as_str(_raw_added(c)[index])
        patch = remove_indexes(c.sc_path("capabilities", "add"), [index])
        yield Hit(path, f"container {c.name!r} adds capability {name}", patch)


@REGISTRY.container(
    Meta(
        "CTR-07", "Capabilities not dropped (no drop ALL)", Severity.MEDIUM,
        ks=("C-0201",), ckv=("CKV_K8S_37", "CKV_K8S_36"), cis=("5.2.10",),
        runtime=(USED, "the capabilities actually exercised are the minimal add list after "
                 "drop ALL (usually empty, or NET_BIND_SERVICE)."),
        fix="Add ALL to securityContext.capabilities.drop and add back only what is needed.",
    )
)  # fmt: skip
def no_drop_all(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """The runtime's default capability set (CHOWN, SETUID, NET_RAW, ...) stays available
    unless ALL is dropped."""
    if "ALL" not in c.caps_drop:
        path = c.sc_path("capabilities", "drop")
        patch = append_value(pod.manifest.body, path, "ALL")
        yield Hit(path, f"container {c.name!r} does not drop ALL capabilities", patch)


@REGISTRY.container(
    Meta(
        "CTR-08", "NET_RAW not dropped", Severity.MEDIUM,
        ks=("C-0211", "C-0199"), ckv=("CKV_K8S_28", "CKV_K8S_7"), fw="SEC",
        cis=("5.2.8", "5.7.3"),
        runtime=(USED, "socket(AF_PACKET) or raw INET sockets (ping, capture, ARP spoofing); "
                 "none means dropping NET_RAW is safe."),
        fix="Add NET_RAW (or ALL) to securityContext.capabilities.drop and do not add it back.",
    )
)  # fmt: skip
def net_raw(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """NET_RAW allows packet crafting and spoofing inside the pod network (ARP/DNS poisoning)."""
    readded = _cap_indexes(c, frozenset({"NET_RAW", "ALL"}))
    if readded:
        path = c.sc_path("capabilities", "add", readded[0])
        patch = remove_indexes(c.sc_path("capabilities", "add"), readded)
        yield Hit(path, f"container {c.name!r} adds NET_RAW back", patch)
    elif not {"NET_RAW", "ALL"} & set(c.caps_drop):
        path = c.sc_path("capabilities", "drop")
        patch = append_value(pod.manifest.body, path, "NET_RAW")
        yield Hit(path, f"container {c.name!r} keeps NET_RAW", patch)


@REGISTRY.pod(
    Meta(
        "CTR-09", "No securityContext at all", Severity.HIGH,
        ks=("C-0211",), ckv=("CKV_K8S_29", "CKV_K8S_30"), fw="SEC", cis=("5.7.3",),
        runtime=(NO_SIGNAL, "presence-only check; the specific CTR controls carry the runtime "
                 "correlation."),
        fix="Declare a securityContext on the pod and on every container (runAsNonRoot, "
            "seccompProfile, allowPrivilegeEscalation, capabilities).",
    )
)  # fmt: skip
def no_security_context(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """A spec with no securityContext runs with every runtime default, none of them hardened."""
    body = pod.manifest.body
    if not pod.security_context:
        path = pod.at("securityContext")
        hardened = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        yield Hit(path, "pod spec has no securityContext", set_value(body, path, hardened))
    for c in pod.containers:
        if not c.security_context:
            path = c.sc_path()
            hardened = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
            message = f"container {c.name!r} has no securityContext"
            yield Hit(path, message, set_value(body, path, hardened))


@REGISTRY.pod(
    Meta(
        "CTR-10", "Seccomp profile missing or not RuntimeDefault", Severity.MEDIUM,
        ks=("C-0210", "C-0055"), ckv=("CKV_K8S_31", "CKV_K8S_32"), fw="AB NSA WS",
        cis=("5.7.2",),
        runtime=(USED, "observed syscall set per container: if nothing RuntimeDefault blocks "
                 "(unshare, mount, keyctl, bpf, ptrace) is used, enforcing it is safe."),
        fix="Set securityContext.seccompProfile.type to RuntimeDefault on the pod (or Localhost "
            "with a tailored profile).",
    )
)  # fmt: skip
def seccomp(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Without a seccomp profile every syscall is reachable, including the ones most kernel
    exploits need."""
    body = pod.manifest.body
    pod_level_gap = False
    for c in pod.containers:
        value = c.seccomp_type.value
        if value in ("RuntimeDefault", "Localhost"):
            continue
        if value is not None and not c.seccomp_type.from_pod:
            patch = set_value(body, c.seccomp_type.path, "RuntimeDefault")
            yield Hit(c.seccomp_type.path, f"container {c.name!r} seccomp is {value}", patch)
        else:
            pod_level_gap = True
    if pod_level_gap:
        path = pod.at("securityContext", "seccompProfile", "type")
        patch = set_value(body, path, "RuntimeDefault")
        yield Hit(path, "pod has no RuntimeDefault seccomp profile", patch)


_SELINUX_TYPES = frozenset(
    {"container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)


@REGISTRY.pod(
    Meta(
        "CTR-11", "AppArmor / SELinux not configured or Unconfined", Severity.LOW,
        ks=("C-0211",), fw="SEC", cis=("5.7.3",),
        runtime=(PARTIAL, "LSM denial/audit records (AVC, apparmor=DENIED) confirm a profile "
                 "is enforcing; observed file/exec behaviour can seed a profile."),
        fix="Set appArmorProfile.type RuntimeDefault (or seLinuxOptions with a container_t "
            "type); never Unconfined or a custom SELinux user/role.",
    )
)  # fmt: skip
def mandatory_access_control(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """With no AppArmor or SELinux profile (or an Unconfined one) the kernel's mandatory access
    control does not contain a compromised process."""
    body = pod.manifest.body
    configured = False
    for c in pod.containers:
        armor, selinux = c.apparmor_type, c.se_linux_options
        configured = configured or armor.value is not None or selinux.value is not None
        if armor.value == "Unconfined":
            patch = set_value(body, c.sc_path("appArmorProfile", "type"), "RuntimeDefault")
            yield Hit(armor.path, f"container {c.name!r} AppArmor is Unconfined", patch)
        options = selinux.value or {}
        custom = [k for k in ("user", "role") if options.get(k)]
        if options.get("type") and options.get("type") not in _SELINUX_TYPES:
            custom.append("type")
        if custom:
            message = f"container {c.name!r} sets custom SELinux {', '.join(custom)}"
            yield Hit(selinux.path, message)
    if pod.containers and not configured:
        path = pod.at("securityContext", "appArmorProfile", "type")
        patch = set_value(body, path, "RuntimeDefault")
        yield Hit(path, "no AppArmor or SELinux profile on the pod or its containers", patch)


@REGISTRY.container(
    Meta(
        "CTR-12", "procMount Unmasked", Severity.HIGH,
        ks=("C-0211",), fw="SEC", cis=("5.7.3",),
        runtime=(USED, "opens of normally masked /proc and /sys paths (/proc/kcore, "
                 "/proc/sysrq-trigger, /sys/firmware) from inside the container."),
        fix="Remove securityContext.procMount or set it to Default.",
    )
)  # fmt: skip
def proc_mount(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """An Unmasked /proc exposes kernel interfaces (sysrq, kcore) that the runtime hides."""
    value = c.security_context.get("procMount")
    if value is not None and value != "Default":
        path = c.sc_path("procMount")
        patch = set_value(pod.manifest.body, path, "Default")
        yield Hit(path, f"container {c.name!r} procMount is {value!r}", patch)


SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)  # fmt: skip


@REGISTRY.pod(
    Meta(
        "CTR-13", "Unsafe sysctls", Severity.MEDIUM,
        ks=("C-0211",), fw="SEC", cis=("5.7.3",),
        runtime=(NO_SIGNAL, "sysctls apply at sandbox creation; runtime can only read values "
                 "back, not prove the need."),
        fix="Remove sysctls outside the kubelet's safe set from securityContext.sysctls.",
    )
)  # fmt: skip
def unsafe_sysctls(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Unsafe sysctls change kernel behaviour for the whole node, not just the pod."""
    sysctls_path = pod.at("securityContext", "sysctls")
    for index, entry in enumerate(as_list(pod.security_context.get("sysctls"))):
        name = as_str(as_map(entry).get("name"))
        if name and name not in SAFE_SYSCTLS:
            patch = remove_indexes(sysctls_path, [index])
            yield Hit((*sysctls_path, index, "name"), f"unsafe sysctl {name}", patch)


@REGISTRY.container(
    Meta(
        "CTR-14", "Windows HostProcess container", Severity.HIGH,
        ks=("C-0211", "C-0202"), fw="SEC", cis=("5.2.11", "5.7.3"),
        runtime=(NO_SIGNAL, "Linux eBPF sensors do not cover Windows nodes."),
        fix="Set windowsOptions.hostProcess to false (run node tooling outside the cluster).",
    )
)  # fmt: skip
def host_process(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """A HostProcess container runs directly on the Windows host with host privileges."""
    if c.host_process.value is True:
        path = c.host_process.path
        patch = set_value(pod.manifest.body, c.sc_path("windowsOptions", "hostProcess"), False)
        yield Hit(path, f"container {c.name!r} is a Windows HostProcess container", patch)


@REGISTRY.pod(
    Meta(
        "CTR-15", "Root group (runAsGroup, fsGroup or supplementalGroups 0)", Severity.LOW,
        ks=("C-0013", "C-0211"), fw="AB CS NSA SEC WS", cis=("5.7.3",),
        runtime=(CONFIRM_REFUTE, "observed gid/egid and supplementary groups of container "
                 "processes; files created with gid 0 on shared volumes."),
        fix="Set runAsGroup (and fsGroup) to a non-zero GID and keep 0 out of "
            "supplementalGroups.",
    )
)  # fmt: skip
def root_group(pod: PodView, ctx: Context) -> Iterator[Hit]:
    """Group 0 owns many host and image files; a process in it can read or write them."""
    body = pod.manifest.body
    for c in pod.containers:
        group = c.run_as_group
        if group.value is None or group.value == 0:
            shown = "unset" if group.value is None else "0"
            patch = set_value(body, c.sc_path("runAsGroup"), NON_ROOT_UID)
            yield Hit(group.path, f"container {c.name!r} runAsGroup is {shown}", patch)
    if pod.security_context.get("fsGroup") == 0:
        path = pod.at("securityContext", "fsGroup")
        yield Hit(path, "fsGroup is 0", set_value(body, path, NON_ROOT_UID))
    groups = as_list(pod.security_context.get("supplementalGroups"))
    zeros = [i for i, g in enumerate(groups) if g == 0 and not isinstance(g, bool)]
    if zeros:
        list_path = pod.at("securityContext", "supplementalGroups")
        patch = remove_indexes(list_path, zeros)
        yield Hit((*list_path, zeros[0]), "supplementalGroups contains 0", patch)


@REGISTRY.container(
    Meta(
        "CTR-16", "sudo in container entrypoint", Severity.MEDIUM,
        ks=("C-0062",), fw="AB",
        runtime=(CONFIRM, "execve of a sudo binary followed by a uid transition to 0; also "
                 "catches sudo launched from scripts."),
        fix="Remove sudo from the command; run the process with the user it needs.",
    )
)  # fmt: skip
def sudo(pod: PodView, c: ContainerView, ctx: Context) -> Iterator[Hit]:
    """sudo in the entrypoint means the image carries a setuid path to root."""
    for index, part in enumerate(as_list(c.body.get("command"))):
        if isinstance(part, str) and "sudo" in part:
            yield Hit((*c.path, "command", index), f"container {c.name!r} command uses sudo")
