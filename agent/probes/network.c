/* Network flows of tracked cgroups: connects and UDP sends from cgroup sock_addr hooks on the v2
 * root (no per-syscall tax; io_uring included), and accepted TCP connections from
 * sock:inet_sock_set_state (SYN_RECV -> ESTABLISHED), attributed by the socket's own cgroup
 * because that transition runs in softirq context, often on the peer's task. De-duplicated. */
#define DIR_CONNECT 1
#define DIR_ACCEPT 2
#define DIR_UDP_SEND 3

struct flow_key {
    u64 cgid;
    u8 direction;
    u8 family;
    u16 protocol;
    u16 remote_port;
    u16 local_port;
    u8 remote[16];
    u8 local[16];
};
BPF_HASH(flows_seen, struct flow_key, u64, 16384);

struct flow_event {
    struct hdr h;
    struct flow_key k;
};

static __always_inline void flow(struct flow_key *k, int task_context, u16 remote_port) {
    u64 one = 1, *count = flows_seen.lookup(k);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return;
    }
    flows_seen.update(k, &one);
    struct flow_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        flows_seen.delete(k);
        count_drop(EV_FLOW);
        return;
    }
    fill_bare_hdr(&e->h, EV_FLOW, k->cgid);
    if (task_context) {
        e->h.pid = bpf_get_current_pid_tgid() >> 32;
        e->h.uid = (u32)bpf_get_current_uid_gid();
        bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    }
    __builtin_memcpy(&e->k, k, sizeof(*k));
    e->k.remote_port = remote_port;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline int sock_addr(struct bpf_sock_addr *ctx, u8 direction, u8 family) {
    struct flow_key k = {};
    k.cgid = bpf_get_current_cgroup_id();
    if (!is_tracked(k.cgid))
        return 1;
    k.direction = direction;
    k.family = family;
    k.protocol = ctx->protocol;
    k.remote_port = bpf_ntohs(ctx->user_port);
    if (family == 2) {
        u32 ip = ctx->user_ip4;
        __builtin_memcpy(k.remote, &ip, 4);
    } else {
        u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
        __builtin_memcpy(k.remote, ip6, 16);
    }
    flow(&k, 1, k.remote_port);
    return 1;
}

int on_connect4(struct bpf_sock_addr *ctx) { return sock_addr(ctx, DIR_CONNECT, 2); }
int on_connect6(struct bpf_sock_addr *ctx) { return sock_addr(ctx, DIR_CONNECT, 10); }
int on_sendmsg4(struct bpf_sock_addr *ctx) { return sock_addr(ctx, DIR_UDP_SEND, 2); }
int on_sendmsg6(struct bpf_sock_addr *ctx) { return sock_addr(ctx, DIR_UDP_SEND, 10); }

struct inet_state_args {
    u64 common;
    void *skaddr;
    int oldstate;
    int newstate;
    u16 sport;
    u16 dport;
    u16 family;
    u16 protocol;
    u8 saddr[4];
    u8 daddr[4];
    u8 saddr_v6[16];
    u8 daddr_v6[16];
};

static __always_inline u64 sock_cgroup_id(void *sk) {
    void *cgrp = 0, *kn = 0;
    u64 id = 0;
    bpf_probe_read_kernel(&cgrp, sizeof(cgrp), (char *)sk + OFF_SK_CGRP_DATA + OFF_SKCD_CGROUP);
    bpf_probe_read_kernel(&kn, sizeof(kn), (char *)cgrp + OFF_CGROUP_KN);
    bpf_probe_read_kernel(&id, sizeof(id), (char *)kn + OFF_KN_ID);
    return id;
}

int on_inet_state(struct inet_state_args *args) {
    if (args->oldstate != 3 || args->newstate != 1 || args->protocol != 6)
        return 0; /* only TCP_SYN_RECV -> TCP_ESTABLISHED: a passive open */
    struct flow_key k = {};
    k.cgid = sock_cgroup_id(args->skaddr);
    if (!is_tracked(k.cgid))
        return 0;
    k.direction = DIR_ACCEPT;
    k.family = args->family;
    k.protocol = 6;
    k.local_port = args->sport;
    if (args->family == 2) {
        __builtin_memcpy(k.local, args->saddr, 4);
        __builtin_memcpy(k.remote, args->daddr, 4);
    } else {
        __builtin_memcpy(k.local, args->saddr_v6, 16);
        __builtin_memcpy(k.remote, args->daddr_v6, 16);
    }
    /* the key leaves out the peer's ephemeral port, which would defeat de-duplication */
    flow(&k, 0, args->dport);
    return 0;
}
