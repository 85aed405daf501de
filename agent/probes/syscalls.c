/* Per-cgroup syscall sets, aggregated in the kernel, only for cgroups in the `learning` map.
 * Syscalls before the cgroup's first exec (the container runtime's start-up) go to `pre`, later
 * ones to `post`. In monitor mode `post` holds the learned set and only deviations are emitted.
 *
 * Which cgroups are tracked from their creation (cgroup_mkdir, before their first process runs):
 * any path with a segment containing `kubepods`, which kubelet's cgroup root always has whatever
 * the driver and wherever the node runs (`/kubepods/...` under cgroupfs, `/kubepods.slice/...`
 * under systemd, `/kubelet.slice/kubelet-kubepods.slice/...` in kind, `/system.slice/docker-<id>
 * .scope/kubepods/...` nested in Docker), the same test agent.attribution.paths needs to
 * attribute a cgroup; and paths starting with an armed prefix (local pods). The tracepoint
 * carries no parent id, so "child of a tracked cgroup" cannot be asked here; the segment rule
 * covers every descendant of a pod anyway. */
#define MODE_LEARN 1
#define MODE_MONITOR 2
#define NR_MAX 512

struct cgstate {
    u32 mode;
    u32 execd;
    u32 start; /* 1: made at the cgroup's mkdir while sys_enter was attached: start-up seen */
    u32 pad;
    u8 pre[NR_MAX];
    u8 post[NR_MAX];
};
BPF_HASH(learning, u64, struct cgstate, 4096);
BPF_ARRAY(zero_state, struct cgstate, 1);
/* A first-level filter by the id's low 16 bits: array lookups are inlined by the verifier, so
 * the syscalls of cgroups that are not learning skip the hash lookup. */
#define FILTER_SLOTS 65536
BPF_ARRAY(learn_filter, u8, FILTER_SLOTS);

struct devkey {
    u64 cgid;
    u64 nr;
};
BPF_HASH(deviations, struct devkey, u64, 16384);

struct dev_event {
    struct hdr h;
    u32 nr;
    u32 pad;
};

static __always_inline void deviation(u64 cgid, u64 nr) {
    struct devkey key = {.cgid = cgid, .nr = nr};
    u64 one = 1, *count = deviations.lookup(&key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return;
    }
    deviations.update(&key, &one);
    struct dev_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        deviations.delete(&key);
        count_drop(EV_SYSCALL_DEVIATION);
        return;
    }
    fill_hdr(&e->h, EV_SYSCALL_DEVIATION, cgid);
    e->nr = nr;
    e->pad = 0;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

int on_sys_enter(struct bpf_raw_tracepoint_args *ctx) {
    u64 cgid = bpf_get_current_cgroup_id();
    int slot_idx = cgid & (FILTER_SLOTS - 1);
    u8 *hit = learn_filter.lookup(&slot_idx);
    if (!hit || !*hit)
        return 0;
    struct cgstate *s = learning.lookup(&cgid);
    if (!s)
        return 0;
    u64 nr = ctx->args[1];
    if (nr >= NR_MAX)
        return 0;
    if (s->mode == MODE_LEARN) {
        u8 *slot = s->execd ? &s->post[nr] : &s->pre[nr];
        if (*slot == 0)
            *slot = 1;
    } else if (s->mode == MODE_MONITOR && !s->post[nr]) {
        deviation(cgid, nr);
    }
    return 0;
}

/* Marks the end of the runtime's start-up: the cgroup's first successful exec. */
int on_exec_mark(struct bpf_raw_tracepoint_args *ctx) {
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *s = learning.lookup(&cgid);
    if (s && !s->execd)
        s->execd = 1;
    return 0;
}

struct cgroup_args {
    u64 common;
    int root;
    int level;
    u64 id;
    u32 path_loc;
};

/* Cgroup paths (relative to the v2 root) whose new children are tracked (and with `learn`,
 * learned) at mkdir, before their first process runs. */
#define PREFIX_MAX 64
struct prefix {
    u32 used;
    u32 learn;
    char s[PREFIX_MAX];
    u8 mask[PREFIX_MAX]; /* 0xff for the prefix's bytes, 0 after: no data-dependent loop bound */
};
BPF_ARRAY(prefixes, struct prefix, 4);

/* Set by agent.probes.control: the `kubepods` rule, and whether sys_enter is attached now. */
struct rule_set {
    u32 kube;        /* track new cgroups with a `kubepods` path segment */
    u32 kube_learn;  /* and learn them from their mkdir */
    u32 syscalls_on; /* sys_enter is attached: an entry made now sees the start-up */
    u32 pad;
};
BPF_ARRAY(cgroup_rules, struct rule_set, 1);

/* Cgroups a rule matched but the kernel could not keep: 0 not tracked (`tracked` full), 1 not
 * learned (`learning` full). Reported by the agent as map-full drops, never silent. */
#define LOSS_TRACK 0
#define LOSS_LEARN 1
BPF_PERCPU_ARRAY(cgroup_losses, u64, 2);

#define PATH_BYTES 256
struct cgroup_event {
    struct hdr h;
    char path[PATH_BYTES];
};

struct path_buf {
    char s[PATH_BYTES];
};
BPF_PERCPU_ARRAY(path_scratch, struct path_buf, 1);

static __always_inline void count_loss(u32 what) {
    u64 *c = cgroup_losses.lookup(&what);
    if (c)
        (*c)++;
}

static __always_inline int prefix_match(struct prefix *p, const char *path) {
    u8 diff = 0;
    if (!p->used)
        return 0;
    for (int i = 0; i < PREFIX_MAX; i++)
        diff |= (path[i] & p->mask[i]) ^ p->s[i];
    return diff == 0;
}

static __always_inline struct prefix *matching_prefix(const char *path) {
    for (int i = 0; i < 4; i++) {
        int idx = i;
        struct prefix *p = prefixes.lookup(&idx);
        if (p && prefix_match(p, path))
            return p;
    }
    return 0;
}

/* "kubepods" as the last 8 bytes read, most recent byte lowest. */
#define KUBEPODS 0x6b756265706f6473ULL

static __always_inline int has_kubepods(const char *path) {
    u64 window = 0;
    for (int i = 0; i < PATH_BYTES; i++) {
        u8 c = path[i];
        if (c == 0)
            return 0;
        window = (window << 8) | c;
        if (window == KUBEPODS)
            return 1;
    }
    return 0;
}

/* Starts learning a new cgroup: a zeroed LEARN entry, marked as having seen the start when
 * sys_enter is attached now (else user space decides from the cgroup's CPU time). */
static __always_inline void learn_new(u64 cgid, struct rule_set *r) {
    int zero = 0;
    struct cgstate *init = zero_state.lookup(&zero);
    if (!init)
        return;
    if (learning.update(&cgid, init)) {
        count_loss(LOSS_LEARN);
        return;
    }
    struct cgstate *s = learning.lookup(&cgid);
    if (s && r)
        s->start = r->syscalls_on;
    int slot_idx = cgid & (FILTER_SLOTS - 1);
    u8 on = 1;
    learn_filter.update(&slot_idx, &on);
}

int on_cgroup_mkdir(struct cgroup_args *args) {
    if (args->root != CGROUP2_ROOT)
        return 0;
    int zero = 0;
    struct path_buf *buf = path_scratch.lookup(&zero);
    if (!buf)
        return 0;
    bpf_probe_read_kernel_str(buf->s, sizeof(buf->s), (char *)args + (args->path_loc & 0xFFFF));
    struct rule_set *r = cgroup_rules.lookup(&zero);
    struct prefix *p = matching_prefix(buf->s);
    u32 learn = 0;
    if (p)
        learn = p->learn;
    else if (r && r->kube && has_kubepods(buf->s))
        learn = r->kube_learn;
    else
        return 0;
    u64 cgid = args->id;
    u32 flags = 1;
    if (tracked.update(&cgid, &flags)) {
        count_loss(LOSS_TRACK);
        return 0;
    }
    if (learn)
        learn_new(cgid, r);
    struct cgroup_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_CGROUP_MKDIR);
        return 0;
    }
    __builtin_memcpy(e->path, buf->s, sizeof(e->path));
    fill_hdr(&e->h, EV_CGROUP_MKDIR, cgid);
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

int on_cgroup_rmdir(struct cgroup_args *args) {
    u64 cgid = args->id;
    if (args->root != CGROUP2_ROOT || !is_tracked(cgid))
        return 0;
    struct cgroup_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_CGROUP_RMDIR);
        return 0;
    }
    fill_hdr(&e->h, EV_CGROUP_RMDIR, cgid);
    bpf_probe_read_kernel_str(e->path, sizeof(e->path), (char *)args + (args->path_loc & 0xFFFF));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
