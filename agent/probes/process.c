/* Process tree of tracked cgroups: exec (path, argv, ids, the kinds of fds 0-2, the working
 * directory), failed execs (at sys_exit_execve, sharing the file probes' syscall-tracepoint tax),
 * fork (processes, not threads) and exit; and each tracked cgroup's first successful exec, the
 * end of the container runtime's start-up (as for syscall sets in syscalls.c), which caps.c
 * needs to tell the runtime's capability checks from the workload's. */
#define ARGS_MAX 1024
#define ARG_SLOTS 8 /* failed execs: argv[i] at args + i * ARG_SLOT, from the caller's memory */
#define ARG_SLOT 128
#define CWD_DEPTH 16
#define CWD_NAME 64
#define CWD_UNKNOWN 0xFFFF
#define ARGS_SLOTTED 2

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
    u32 args_flags; /* bit 0: truncated; bit 1: slotted (failed exec) */
    s32 ret;
    u16 fd_mode[3];
    u16 cwd_depth; /* components in cwd, leaf first; CWD_UNKNOWN when the walk did not finish */
    u32 fd_rdev[3];
    u32 pad;
    char path[256];
    char args[ARGS_MAX];
    char cwd[CWD_DEPTH][CWD_NAME];
};

/* Tracked cgroups whose first exec was seen (value 1): set here at the exec, by user space for
 * cgroups that ran before the agent tracked them (agent.probes.control `track`), and by caps.c
 * for a cgroup below one whose exec was seen (a container's own sub-cgroup). The entry goes
 * with the cgroup's tracking (Control.forget), so it never holds more than `tracked`. A marker
 * that cannot be stored is counted in exec_mark_losses (slot 0 here, slot 1 user space); any
 * loss makes caps.c take every check for the workload's, the safe side: a check wrongly taken
 * for start-up would let hardening drop a capability the workload needs. */
BPF_HASH(exec_seen, u64, u8, 16384);
BPF_ARRAY(exec_mark_losses, u64, 2);

static __always_inline void mark_exec_seen(u64 cgid) {
    u8 one = 1;
    if (exec_seen.lookup(&cgid))
        return;
    if (exec_seen.update(&cgid, &one)) {
        int slot = 0;
        u64 *lost = exec_mark_losses.lookup(&slot);
        if (lost)
            __sync_fetch_and_add(lost, 1);
    }
}

static __always_inline void *read_ptr(void *base, u32 off) {
    void *p = 0;
    bpf_probe_read_kernel(&p, sizeof(p), (char *)base + off);
    return p;
}

/* i_mode and i_rdev of fds 0-2: user space tells sockets, pipes, ttys and files apart. */
static __always_inline void fill_fds(void *task, struct exec_event *e) {
    void *fdt = read_ptr(read_ptr(task, OFF_TASK_FILES), OFF_FILES_FDT);
    u32 max = 0;
    bpf_probe_read_kernel(&max, sizeof(max), (char *)fdt + OFF_FDT_MAX_FDS);
    void *files[3] = {0, 0, 0};
    bpf_probe_read_kernel(files, sizeof(files), read_ptr(fdt, OFF_FDT_FD));
#pragma unroll
    for (int i = 0; i < 3; i++) {
        e->fd_mode[i] = 0;
        e->fd_rdev[i] = 0;
        if (i >= max || !files[i])
            continue;
        void *inode = read_ptr(files[i], OFF_FILE_INODE);
        bpf_probe_read_kernel(&e->fd_mode[i], sizeof(u16), (char *)inode + OFF_INODE_MODE);
        bpf_probe_read_kernel(&e->fd_rdev[i], sizeof(u32), (char *)inode + OFF_INODE_RDEV);
    }
}

/* The working directory relative to the task's root, as d_path walks it: dentry parents,
 * crossing mounts at their roots, leaf first. At most CWD_DEPTH names of CWD_NAME bytes. */
static __always_inline void fill_cwd(void *task, struct exec_event *e) {
    char *fs = read_ptr(task, OFF_TASK_FS);
    void *root_mnt = read_ptr(fs, OFF_FS_ROOT + OFF_PATH_MNT);
    void *root = read_ptr(fs, OFF_FS_ROOT + OFF_PATH_DENTRY);
    void *vfsmnt = read_ptr(fs, OFF_FS_PWD + OFF_PATH_MNT);
    void *dentry = read_ptr(fs, OFF_FS_PWD + OFF_PATH_DENTRY);
    u32 n = 0;
    e->cwd_depth = CWD_UNKNOWN;
#pragma unroll
    for (int i = 0; i < CWD_DEPTH + 4; i++) {
        if (dentry == root && vfsmnt == root_mnt) {
            e->cwd_depth = n;
            return;
        }
        if (dentry == read_ptr(vfsmnt, OFF_VFSMOUNT_MNT_ROOT)) {
            char *mnt = (char *)vfsmnt - OFF_MOUNT_MNT;
            char *parent = read_ptr(mnt, OFF_MOUNT_MNT_PARENT);
            if (parent == mnt) {
                e->cwd_depth = n;
                return;
            }
            dentry = read_ptr(mnt, OFF_MOUNT_MNT_MOUNTPOINT);
            vfsmnt = parent + OFF_MOUNT_MNT;
            continue;
        }
        if (n >= CWD_DEPTH)
            return;
        void *name = read_ptr(dentry, OFF_DENTRY_D_NAME + OFF_QSTR_NAME);
        if (bpf_probe_read_kernel_str(e->cwd[n & (CWD_DEPTH - 1)], CWD_NAME, name) >= CWD_NAME)
            return; /* a longer name would be cut: leave the cwd unknown rather than wrong */
        n++;
        dentry = read_ptr(dentry, OFF_DENTRY_D_PARENT);
    }
}

static __always_inline void fill_exec(struct exec_event *e, u64 cgid, s32 ret) {
    fill_hdr(&e->h, EV_EXEC, cgid);
    u64 ugid = bpf_get_current_uid_gid();
    e->gid = ugid >> 32;
    e->ret = ret;
    e->pad = 0;
    void *task = (void *)bpf_get_current_task();
    void *cred = read_ptr(task, OFF_TASK_CRED);
    bpf_probe_read_kernel(&e->euid, sizeof(e->euid), (char *)cred + OFF_CRED_EUID);
    bpf_probe_read_kernel(&e->egid, sizeof(e->egid), (char *)cred + OFF_CRED_EGID);
    fill_fds(task, e);
    fill_cwd(task, e);
}

int on_exec(struct exec_args *args) {
    u64 cgid = bpf_get_current_cgroup_id();
    if (!is_tracked(cgid))
        return 0;
    mark_exec_seen(cgid); /* before the event, which a full ring may drop */
    struct exec_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_EXEC);
        return 0;
    }
    fill_exec(e, cgid, 0);
    bpf_probe_read_kernel_str(e->path, sizeof(e->path), (char *)args + (args->filename_loc & 0xFFFF));
    u64 start = 0, end = 0;
    void *mm = read_ptr((void *)bpf_get_current_task(), OFF_TASK_MM);
    bpf_probe_read_kernel(&start, sizeof(start), (char *)mm + OFF_MM_ARG_START);
    bpf_probe_read_kernel(&end, sizeof(end), (char *)mm + OFF_MM_ARG_END);
    u64 len = end > start ? end - start : 0;
    e->args_flags = len > ARGS_MAX;
    if (len > ARGS_MAX)
        len = ARGS_MAX;
    e->args_len = 0;
    if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
        e->args_len = len;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

/* execve/execveat arguments by thread, kept until sys_exit shows whether the exec failed. */
struct exec_call {
    u64 filename;
    u64 argv;
};
BPF_TABLE("lru_hash", u32, struct exec_call, exec_calls, 4096);

static __always_inline int stash_exec(u64 filename, u64 argv) {
    if (!is_tracked(bpf_get_current_cgroup_id()))
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    struct exec_call c = {.filename = filename, .argv = argv};
    exec_calls.update(&tid, &c);
    return 0;
}

int on_enter_execve(struct sys_enter_args *args) { return stash_exec(args->a[0], args->a[1]); }

int on_enter_execveat(struct sys_enter_args *args) { return stash_exec(args->a[1], args->a[2]); }

/* After a failed exec the caller's memory is intact: the path and argv come from it. */
int on_exit_execve(struct sys_exit_args *args) {
    u32 tid = bpf_get_current_pid_tgid();
    struct exec_call *c = exec_calls.lookup(&tid);
    if (!c)
        return 0;
    long ret = args->ret;
    struct exec_call call = *c;
    exec_calls.delete(&tid);
    if (ret >= 0)
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    struct exec_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_EXEC);
        return 0;
    }
    fill_exec(e, cgid, ret);
    e->path[0] = 0;
    bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)call.filename);
    e->args_len = 0; /* slotted: the number of slots filled */
    e->args_flags = ARGS_SLOTTED;
#pragma unroll
    for (int i = 0; i <= ARG_SLOTS; i++) {
        u64 p = 0;
        bpf_probe_read_user(&p, sizeof(p), (char *)call.argv + i * 8);
        if (!p)
            break;
        if (i == ARG_SLOTS) {
            e->args_flags |= 1;
            break;
        }
        bpf_probe_read_user_str(&e->args[i * ARG_SLOT], ARG_SLOT, (void *)p);
        e->args_len = i + 1;
    }
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
