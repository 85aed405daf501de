/* Shared by every probe: the event header, the ring buffer, per-type drop counters and the set of
 * tracked cgroups. Kernel structs are read only at offsets from the running kernel's BTF, passed
 * by the loader as -DOFF_* defines, never through the (mismatched) compile-time headers. */
#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf.h>

/* Event types; the numbers up to 15 equal parallax.runtime.v1.EventType. */
#define EV_SYSCALL_DEVIATION 2
#define EV_EXEC 3
#define EV_FORK 4
#define EV_EXIT 5
#define EV_OPEN 6
#define EV_FLOW 7
#define EV_DNS 8
#define EV_CAP 9
#define EV_CGROUP_MKDIR 16
#define EV_CGROUP_RMDIR 17
#define N_TYPES 18

struct hdr {
    u32 type;
    u32 pid;
    u32 ppid;
    u32 uid;
    u64 ts;
    u64 cgid;
    char comm[16];
};

/* Arguments of syscalls:sys_enter_* and sys_exit_* tracepoints. */
struct sys_enter_args {
    u64 common;
    int nr;
    int pad;
    u64 a[6];
};

struct sys_exit_args {
    u64 common;
    int nr;
    int pad;
    long ret;
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(drops, u64, N_TYPES);
/* Cgroups whose events are recorded (value: flags); everything else, host included, is ignored. */
BPF_HASH(tracked, u64, u32, 16384);

static __always_inline void count_drop(u32 type) {
    u64 *c = drops.lookup(&type);
    if (c)
        (*c)++;
}

static __always_inline u32 task_ppid(void *task) {
    void *parent = 0;
    u32 tgid = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), (char *)task + OFF_REAL_PARENT);
    bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)parent + OFF_TGID);
    return tgid;
}

/* Header for events raised in task context. */
static __always_inline void fill_hdr(struct hdr *h, u32 type, u64 cgid) {
    h->type = type;
    h->pid = bpf_get_current_pid_tgid() >> 32;
    h->ppid = task_ppid((void *)bpf_get_current_task());
    h->uid = (u32)bpf_get_current_uid_gid();
    h->ts = bpf_ktime_get_ns();
    h->cgid = cgid;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* Header for events without a usable task (softirq, socket hooks): pid and ppid stay 0. */
static __always_inline void fill_bare_hdr(struct hdr *h, u32 type, u64 cgid) {
    h->type = type;
    h->pid = 0;
    h->ppid = 0;
    h->uid = 0;
    h->ts = bpf_ktime_get_ns();
    h->cgid = cgid;
    __builtin_memset(h->comm, 0, sizeof(h->comm));
}

static __always_inline int is_tracked(u64 cgid) {
    return tracked.lookup(&cgid) != 0;
}
