/* Process tree of tracked cgroups: exec (path, argv, ids), fork (processes, not threads), exit. */
#define ARGS_MAX 1024

struct exec_args {
    u64 common;
    u32 filename_loc;
    int pid;
    int old_pid;
};

struct exec_event {
    struct hdr h;
    u32 euid;
    u32 gid;
    u32 egid;
    u32 args_len;
    u32 args_truncated;
    u32 pad;
    char path[256];
    char args[ARGS_MAX];
};

int on_exec(struct exec_args *args) {
    u64 cgid = bpf_get_current_cgroup_id();
    if (!is_tracked(cgid))
        return 0;
    struct exec_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_EXEC);
        return 0;
    }
    fill_hdr(&e->h, EV_EXEC, cgid);
    u64 ugid = bpf_get_current_uid_gid();
    e->gid = ugid >> 32;
    void *task = (void *)bpf_get_current_task();
    void *cred = 0, *mm = 0;
    bpf_probe_read_kernel(&cred, sizeof(cred), (char *)task + OFF_TASK_CRED);
    bpf_probe_read_kernel(&e->euid, sizeof(e->euid), (char *)cred + OFF_CRED_EUID);
    bpf_probe_read_kernel(&e->egid, sizeof(e->egid), (char *)cred + OFF_CRED_EGID);
    bpf_probe_read_kernel_str(e->path, sizeof(e->path), (char *)args + (args->filename_loc & 0xFFFF));
    u64 start = 0, end = 0;
    bpf_probe_read_kernel(&mm, sizeof(mm), (char *)task + OFF_TASK_MM);
    bpf_probe_read_kernel(&start, sizeof(start), (char *)mm + OFF_MM_ARG_START);
    bpf_probe_read_kernel(&end, sizeof(end), (char *)mm + OFF_MM_ARG_END);
    u64 len = end > start ? end - start : 0;
    e->args_truncated = len > ARGS_MAX;
    if (len > ARGS_MAX)
        len = ARGS_MAX;
    e->args_len = 0;
    if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
        e->args_len = len;
    e->pad = 0;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

struct fork_event {
    struct hdr h;
    u32 child_pid;
    u32 pad;
};

int on_fork(struct bpf_raw_tracepoint_args *ctx) {
    u64 cgid = bpf_get_current_cgroup_id();
    if (!is_tracked(cgid))
        return 0;
    void *child = (void *)ctx->args[1];
    u32 tgid = 0, pid = 0;
    bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)child + OFF_TGID);
    bpf_probe_read_kernel(&pid, sizeof(pid), (char *)child + OFF_PID);
    if (tgid != pid)
        return 0; /* a new thread, not a new process */
    struct fork_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_FORK);
        return 0;
    }
    fill_hdr(&e->h, EV_FORK, cgid);
    e->child_pid = pid;
    e->pad = 0;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

struct exit_args {
    u64 common;
    char comm[16];
    int pid;
    int prio;
    u8 group_dead;
};

struct exit_event {
    struct hdr h;
    u32 exit_code;
    u32 pad;
};

int on_exit(struct exit_args *args) {
    u64 cgid = bpf_get_current_cgroup_id();
    if (!args->group_dead || !is_tracked(cgid))
        return 0;
    struct exit_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_EXIT);
        return 0;
    }
    fill_hdr(&e->h, EV_EXIT, cgid);
    e->exit_code = 0;
    bpf_probe_read_kernel(&e->exit_code, sizeof(e->exit_code),
                          (char *)bpf_get_current_task() + OFF_EXIT_CODE);
    e->pad = 0;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
