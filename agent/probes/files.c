/* File opens of tracked cgroups (open, openat, openat2): the path is read at syscall exit, with the
 * flags and the return value, and de-duplicated in the kernel per cgroup, path, flags and result
 * class (success, or the errno), so failed opens stay apart from successful ones. */
#define PATH_MAX_READ 256

struct open_arg {
    u64 fname;
    u32 flags;
    u32 mode;
};
BPF_HASH(open_args, u32, struct open_arg, 16384);

struct open_key {
    u64 cgid;
    s32 result;
    u32 flags;
    char path[PATH_MAX_READ];
};
BPF_HASH(open_seen, struct open_key, u64, 32768);
BPF_PERCPU_ARRAY(open_scratch, struct open_key, 1);

struct open_event {
    struct hdr h;
    s32 ret;
    u32 flags;
    u32 mode;
    u32 pad;
    char path[PATH_MAX_READ];
};

static __always_inline int stash(u64 fname, u64 flags, u64 mode) {
    if (!is_tracked(bpf_get_current_cgroup_id()))
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    struct open_arg a = {.fname = fname, .flags = flags, .mode = mode};
    open_args.update(&tid, &a);
    return 0;
}

int on_enter_open(struct sys_enter_args *args) { return stash(args->a[0], args->a[1], args->a[2]); }

int on_enter_openat(struct sys_enter_args *args) { return stash(args->a[1], args->a[2], args->a[3]); }

int on_enter_openat2(struct sys_enter_args *args) {
    u64 how[2] = {0, 0}; /* struct open_how starts with u64 flags, u64 mode */
    bpf_probe_read_user(how, sizeof(how), (void *)args->a[2]);
    return stash(args->a[1], how[0], how[1]);
}

int on_exit_open(struct sys_exit_args *args) {
    u32 tid = bpf_get_current_pid_tgid();
    struct open_arg *a = open_args.lookup(&tid);
    if (!a)
        return 0;
    int zero = 0;
    struct open_key *key = open_scratch.lookup(&zero);
    if (!key) {
        open_args.delete(&tid);
        return 0;
    }
    __builtin_memset(key, 0, sizeof(*key));
    key->cgid = bpf_get_current_cgroup_id();
    key->result = args->ret < 0 ? (s32)args->ret : 0;
    key->flags = a->flags;
    u32 mode = a->mode;
    bpf_probe_read_user_str(key->path, sizeof(key->path), (void *)a->fname);
    open_args.delete(&tid);
    u64 one = 1, *count = open_seen.lookup(key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return 0;
    }
    open_seen.update(key, &one);
    struct open_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        open_seen.delete(key);
        count_drop(EV_OPEN);
        return 0;
    }
    fill_hdr(&e->h, EV_OPEN, key->cgid);
    e->ret = args->ret;
    e->flags = key->flags;
    e->mode = mode;
    e->pad = 0;
    __builtin_memcpy(e->path, key->path, sizeof(e->path));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
