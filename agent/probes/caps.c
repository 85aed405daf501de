/* Capability checks of tracked cgroups (capability:cap_capable), de-duplicated per cgroup,
 * capability, outcome and start-up: the evidence whether a privileged container uses its
 * privileges. A check made before the cgroup's first exec (process.c exec_seen) is the container
 * runtime's setting the container up (runc init's mounts and setns, a local pod's preexec setns),
 * not the workload's: it is tagged CAP_STARTUP and counted apart. */
struct cap_args {
    u64 common;
    void *cred;
    void *target_ns;
    void *capable_ns;
    int cap;
    int ret;
};

#define CAP_ALLOWED 1
#define CAP_STARTUP 2 /* made before the cgroup's first exec */
#define CGROUP_DEPTH_MAX 32

struct cap_key {
    u64 cgid;
    u32 cap;
    u32 flags; /* CAP_ALLOWED | CAP_STARTUP */
};
BPF_HASH(caps_seen, struct cap_key, u64, 16384);

struct cap_event {
    struct hdr h;
    u32 cap;
    u32 flags;
};

/* Whether the current task's (tracked) cgroup has not had its first exec. Fails safe: once a
 * marker could not be stored anywhere, no check is start-up. A cgroup below one whose exec was
 * seen (a sub-cgroup the workload made, where a process may go on without exec'ing, such as
 * systemd's init.scope) inherits the mark. */
static __always_inline int before_first_exec(u64 cgid) {
    if (exec_seen.lookup(&cgid))
        return 0;
    int kernel = 0, user = 1;
    u64 *lost = exec_mark_losses.lookup(&kernel), *user_lost = exec_mark_losses.lookup(&user);
    if ((lost && *lost) || (user_lost && *user_lost))
        return 0;
#pragma unroll
    for (int level = 0; level < CGROUP_DEPTH_MAX; level++) {
        u64 id = bpf_get_current_ancestor_cgroup_id(level);
        if (!id || id == cgid)
            return 1;
        if (exec_seen.lookup(&id)) {
            mark_exec_seen(cgid);
            return 0;
        }
    }
    return 0; /* deeper than the walk: not known to be start-up */
}

#define CAP_SYS_ADMIN 21
#define VM_ACCT_FRAMES 4
#define X86_64_USER_CS 0x33 /* __USER_CS: a 64-bit task; compat (ia32) tasks use other numbers */
#define NR_MMAP 9
#define NR_MPROTECT 10
#define NR_BRK 12
#define NR_MREMAP 25
#define NR_PKEY_MPROTECT 329
#define MMAP_ANONYMOUS 0x20

/* Memory-overcommit accounting is not a use of CAP_SYS_ADMIN. security_vm_enough_memory_mm()
 * calls cap_capable(CAP_SYS_ADMIN, CAP_OPT_NOAUDIT) (via cap_vm_enough_memory, inlined on 6.18)
 * only to let root dip into the last 3% of the commit limit: nothing is granted or refused. It
 * fires for every root task (allowed) and every other task (denied) on brk, mmap, mprotect,
 * mremap, shmget, MAP_SHARED|MAP_ANONYMOUS, fork/clone (dup_mmap, per accounted mapping), execve
 * (ELF load, stack setup), each page written to tmpfs/memfd (shmem block accounting, from write or
 * a fault) and stack growth faults: measured with kernel stacks on 6.18. The tracepoint's fields
 * cannot tell it apart (CAP_OPT_NOAUDIT is not among them; target_ns is &init_user_ns as with
 * capable()). The syscall number alone cannot either: write, clone and execve reach it too and
 * also make genuine checks (clone(CLONE_NEWNS), sysctl writes, the RLIMIT_NPROC override).
 *
 * So two tests, both only for CAP_SYS_ADMIN in tracked cgroups:
 * 1. Fast (~0.1 us): a 64-bit task inside brk, mprotect, pkey_mprotect, mremap or an anonymous
 *    mmap, read from its saved user registers (bpf_task_pt_regs; offsets from BTF). These
 *    syscalls make no genuine CAP_SYS_ADMIN check (file mmap can: a driver's ->mmap, e.g.
 *    perf_mmap's perfmon_capable(), so it takes test 2).
 * 2. Exact (~1.3 us, the unwinder's cost): the kernel stack's first frames hold an address in
 *    security_vm_enough_memory_mm or cap_vm_enough_memory, whose text ranges the loader takes
 *    from /proc/kallsyms as VM_ACCT_CALLER(). Genuine checks reach cap_capable through
 *    security_capable (capable, ns_capable, ...), never from those functions.
 * Limits: other non-audited checks (has_capability_noaudit and the like) are still reported; a
 * failed stack read reports the check rather than hiding it. */
static __always_inline int vm_acct_syscall(void) {
    struct task_struct *task = (void *)bpf_get_current_task_btf();
    void *regs = (void *)bpf_task_pt_regs(task);
    u64 nr = 0, cs = 0, flags = 0;
    bpf_probe_read_kernel(&cs, sizeof(cs), regs + OFF_PT_REGS_CS);
    if (cs != X86_64_USER_CS)
        return 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), regs + OFF_PT_REGS_ORIG_AX);
    if (nr == NR_BRK || nr == NR_MPROTECT || nr == NR_PKEY_MPROTECT || nr == NR_MREMAP)
        return 1;
    if (nr != NR_MMAP)
        return 0;
    bpf_probe_read_kernel(&flags, sizeof(flags), regs + OFF_PT_REGS_R10); /* 4th argument */
    return (flags & MMAP_ANONYMOUS) != 0;
}

static __always_inline int vm_acct_caller(struct cap_args *args) {
    u64 ips[VM_ACCT_FRAMES] = {};
    if (bpf_get_stack(args, ips, sizeof(ips), 0) <= 0)
        return 0;
#pragma unroll
    for (int i = 0; i < VM_ACCT_FRAMES; i++)
        if (VM_ACCT_CALLER(ips[i]))
            return 1;
    return 0;
}

int on_cap_capable(struct cap_args *args) {
    struct cap_key k = {.cgid = bpf_get_current_cgroup_id(), .cap = args->cap};
    if (!is_tracked(k.cgid))
        return 0;
    if (k.cap == CAP_SYS_ADMIN && (vm_acct_syscall() || vm_acct_caller(args)))
        return 0;
    k.flags = (args->ret == 0 ? CAP_ALLOWED : 0) | (before_first_exec(k.cgid) ? CAP_STARTUP : 0);
    u64 one = 1, *count = caps_seen.lookup(&k);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return 0;
    }
    caps_seen.update(&k, &one);
    struct cap_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        caps_seen.delete(&k);
        count_drop(EV_CAP);
        return 0;
    }
    fill_hdr(&e->h, EV_CAP, k.cgid);
    e->cap = k.cap;
    e->flags = k.flags;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
