/* DNS over UDP port 53 for tracked cgroups, from cgroup_skb programs on the v2 root: egress
 * copies queries, ingress copies answers (the socket's cgroup, so softirq delivery is attributed
 * right). User space parses names, types, rcodes and addresses from the copied payload. */
#define DNS_MAX 512

struct dns_event {
    struct hdr h;
    u8 egress;
    u8 family;
    u16 server_port;
    u32 len;
    u8 server[16];
    u8 data[DNS_MAX];
};

static __always_inline void dns(struct __sk_buff *skb, int egress) {
    u64 cgid = bpf_skb_cgroup_id(skb);
    if (!is_tracked(cgid))
        return;
    u8 family, proto = 0, vihl = 0;
    u32 l4;
    if (skb->protocol == bpf_htons(0x0800)) {
        family = 2;
        bpf_skb_load_bytes(skb, 0, &vihl, 1);
        bpf_skb_load_bytes(skb, 9, &proto, 1);
        l4 = (vihl & 0xF) * 4;
    } else if (skb->protocol == bpf_htons(0x86DD)) {
        family = 10;
        bpf_skb_load_bytes(skb, 6, &proto, 1);
        l4 = 40;
    } else {
        return;
    }
    u16 ports[2] = {0, 0};
    if (proto != 17 || bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
        return;
    u16 server_port = bpf_ntohs(egress ? ports[1] : ports[0]);
    if (server_port != 53)
        return;
    u32 off = l4 + 8, len = skb->len > off ? skb->len - off : 0;
    if (len > DNS_MAX)
        len = DNS_MAX;
    if (len < 12)
        return;
    struct dns_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_drop(EV_DNS);
        return;
    }
    fill_bare_hdr(&e->h, EV_DNS, cgid);
    e->egress = egress;
    e->family = family;
    e->server_port = server_port;
    __builtin_memset(e->server, 0, sizeof(e->server));
    /* the resolver is the destination of a query and the source of an answer */
    if (family == 2)
        bpf_skb_load_bytes(skb, egress ? 16 : 12, e->server, 4);
    else
        bpf_skb_load_bytes(skb, egress ? 24 : 8, e->server, 16);
    e->len = 0;
    if (bpf_skb_load_bytes(skb, off, e->data, len) == 0)
        e->len = len;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

int on_skb_egress(struct __sk_buff *skb) {
    dns(skb, 1);
    return 1;
}

int on_skb_ingress(struct __sk_buff *skb) {
    dns(skb, 0);
    return 1;
}
