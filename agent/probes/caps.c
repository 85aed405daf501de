/* Capability checks of tracked cgroups (capability:cap_capable), de-duplicated per cgroup,
 * capability and outcome: the evidence whether a privileged container uses its privileges. */
struct cap_args {
    u64 common;
    void *cred;
    void *target_ns;
    void *capable_ns;
    int cap;
    int ret;
};

struct cap_key {
    u64 cgid;
    u32 cap;
    u32 allowed;
};
BPF_HASH(caps_seen, struct cap_key, u64, 16384);

struct cap_event {
    struct hdr h;
    u32 cap;
    u32 allowed;
};

int on_cap_capable(struct cap_args *args) {
    struct cap_key k = {.cgid = bpf_get_current_cgroup_id(), .cap = args->cap};
    if (!is_tracked(k.cgid))
        return 0;
    k.allowed = args->ret == 0;
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
    e->allowed = k.allowed;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
