/* Network flows of tracked cgroups: connects and UDP sends from cgroup sock_addr hooks on the v2
 * root (no per-syscall tax; io_uring included), and TCP state changes from
 * sock:inet_sock_set_state. A TCP connect is reported once its outcome is known, with the task
 * its hook saw: SYN_SENT -> ESTABLISHED returns 0, SYN_SENT -> CLOSE the socket's error
 * (-ECONNREFUSED, -ETIMEDOUT, ...; -ECONNABORTED when it has none: closed while connecting, or
 * failed locally), so a blocking and a non-blocking connect end alike. A connect that fails
 * before its SYN (no route, for example) never reaches SYN_SENT and is not reported. Accepted
 * connections come from SYN_RECV -> ESTABLISHED. State changes run in softirq context, often on
 * the peer's task, so they are attributed by the socket's own cgroup. De-duplicated by key, the
 * connect's return value included.
 *
 * A UDP send carries the sending socket's local port (an unbound socket is bound to an ephemeral
 * port by inet_send_prepare before the hook runs, so it is known; 0 would mean unknown) and its
 * bound address (none for the wildcard), so the runtime tells a server's reply (sent from its
 * service port) from a client's send. Its key keeps the service side of the pair, like an
 * accept's: a send from a port below EPHEMERAL_MIN (a reply) is keyed without the peer's port
 * when that one is ephemeral, and a send from an ephemeral (or unknown) port without its own
 * port; so a reply and a client's send to the same peer stay apart, and neither makes one key
 * per client or per query. The event carries both real ports. EPHEMERAL_MIN (a -D define from
 * agent.probes.loader) is Linux's default ip_local_port_range start; a namespace with another
 * range only gets fewer de-duplicated sends, never other ports. agent.probes.counts mirrors the
 * key. */
#define DIR_CONNECT 1
#define DIR_ACCEPT 2
#define DIR_UDP_SEND 3
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define ECONNABORTED 103

struct flow_key {
    u64 cgid;
    u8 direction;
    u8 family;
    u16 protocol;
    u16 remote_port;
    u16 local_port;
    u8 remote[16];
    u8 local[16];
    s32 ret; /* 0 or the negative errno of a TCP connect */
    u32 pad;
};
BPF_HASH(flows_seen, struct flow_key, u64, 16384);

struct flow_event {
    struct hdr h;
    struct flow_key k;
};

/* The task a flow is reported with (pid 0: none, as in softirq context). */
struct flow_task {
    u32 pid;
    u32 uid;
    char comm[16];
};

/* A TCP connect between its hook and its outcome, by socket address. `armed` once the socket
 * reached SYN_SENT after the hook: an entry left by a connect that failed before its SYN is
 * never armed, so a later socket at the same address cannot take it for its own. */
struct pending_connect {
    struct flow_key k;
    struct flow_task t;
    u32 armed;
};
BPF_TABLE("lru_hash", u64, struct pending_connect, connecting, 16384);

static __always_inline void current_task(struct flow_task *t) {
    t->pid = bpf_get_current_pid_tgid() >> 32;
    t->uid = (u32)bpf_get_current_uid_gid();
    bpf_get_current_comm(&t->comm, sizeof(t->comm));
}

/* Reports a flow once per key; `remote_port` and `local_port` are the real ports, which the key
 * may leave out. */
static __always_inline void flow(struct flow_key *k, struct flow_task *t, u16 remote_port,
                                 u16 local_port) {
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
    if (t) {
        e->h.pid = t->pid;
        e->h.uid = t->uid;
        __builtin_memcpy(&e->h.comm, t->comm, sizeof(e->h.comm));
    }
    __builtin_memcpy(&e->k, k, sizeof(*k));
    e->k.remote_port = remote_port;
    e->k.local_port = local_port;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* The sending socket's bound address (0 for the wildcard) and port (host order in bpf_sock). */
static __always_inline u16 udp_local(struct bpf_sock_addr *ctx, struct flow_key *k) {
    struct bpf_sock *sk = ctx->sk;
    if (!sk)
        return 0;
    if (k->family == 2) {
        u32 ip = sk->src_ip4;
        __builtin_memcpy(k->local, &ip, 4);
    } else {
        u32 ip6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
        __builtin_memcpy(k->local, ip6, 16);
    }
    return sk->src_port;
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
    if (direction == DIR_CONNECT && k.protocol == 6) {
        /* reported by on_inet_state once the handshake ends */
        struct pending_connect p = {};
        __builtin_memcpy(&p.k, &k, sizeof(k));
        current_task(&p.t);
        u64 sk = (u64)ctx->sk;
        connecting.update(&sk, &p);
        return 1;
    }
    u16 remote_port = k.remote_port, local_port = 0;
    if (direction == DIR_UDP_SEND) {
        local_port = udp_local(ctx, &k);
        if (local_port && local_port < EPHEMERAL_MIN) {
            k.local_port = local_port; /* a reply: keyed by the service port */
            if (remote_port >= EPHEMERAL_MIN)
                k.remote_port = 0;
        }
    }
    struct flow_task t = {};
    current_task(&t);
    flow(&k, &t, remote_port, local_port);
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

/* The return value of a connect that ended in CLOSE: the socket's error, which the kernel sets
 * before the state change (tcp_done_with_error). Without the sk_err offset (OFF_SK_ERR from the
 * loader) the errno is unknown and every failure is -ECONNABORTED. */
static __always_inline s32 connect_error(void *sk) {
    int err = 0;
#ifdef OFF_SK_ERR
    bpf_probe_read_kernel(&err, sizeof(err), (char *)sk + OFF_SK_ERR);
#endif
    return err > 0 ? -err : -ECONNABORTED;
}

/* A tracked connect's outcome; 1 when `sk` had a connect under way. */
static __always_inline int connected(struct inet_state_args *args, u64 sk) {
    struct pending_connect *p = connecting.lookup(&sk);
    if (!p)
        return 0;
    if (!p->armed) { /* a stale entry of a connect that never sent its SYN */
        connecting.delete(&sk);
        return 0;
    }
    struct flow_key k = {};
    struct flow_task t = {};
    __builtin_memcpy(&k, &p->k, sizeof(k));
    __builtin_memcpy(&t, &p->t, sizeof(t));
    connecting.delete(&sk);
    k.ret = args->newstate == TCP_ESTABLISHED ? 0 : connect_error(args->skaddr);
    flow(&k, &t, k.remote_port, k.local_port);
    return 1;
}

static __always_inline void accepted(struct inet_state_args *args) {
    struct flow_key k = {};
    k.cgid = sock_cgroup_id(args->skaddr);
    if (!is_tracked(k.cgid))
        return;
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
    flow(&k, 0, args->dport, k.local_port);
}

int on_inet_state(struct inet_state_args *args) {
    if (args->protocol != 6)
        return 0;
    int old = args->oldstate, new = args->newstate;
    u64 sk = (u64)args->skaddr;
    if (old == TCP_CLOSE && new == TCP_SYN_SENT) { /* tcp_connect, right after the hook */
        struct pending_connect *p = connecting.lookup(&sk);
        if (p)
            p->armed = 1;
        return 0;
    }
    /* ESTABLISHED from SYN_SENT (or from SYN_RECV after a simultaneous open), or failed */
    int ended = new == TCP_ESTABLISHED || (old == TCP_SYN_SENT && new == TCP_CLOSE);
    if (ended && connected(args, sk))
        return 0;
    if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED)
        accepted(args); /* a passive open */
    return 0;
}
