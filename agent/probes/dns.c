/* DNS over port 53 for tracked cgroups, UDP and TCP, from cgroup_skb programs on the v2 root:
 * egress copies queries, ingress copies answers (the socket's cgroup, so softirq delivery is
 * attributed right). Each DNS message becomes one record holding up to DNS_MAX bytes of it
 * (EDNS0 answers, 1232 to 4096 bytes, fit whole); reserved in two sizes, since the ring buffer
 * only reserves constant sizes, so the usual small message does not take 4 KB of ring. A longer
 * message keeps its first DNS_MAX bytes and counts a DNS drop: its tail is lost.
 * TCP: each segment's payload is read as up to DNS_TCP_MESSAGES messages, each after its 2-byte
 * length prefix, and only when its header looks like a question of the right direction (one
 * question, standard opcode), so a segment that continues a message is not misread as one; the
 * part of a message in later segments is not seen (counted as a drop, like a long message).
 * User space parses names, types, rcodes and addresses from the copied messages. */
#define DNS_MAX 4096
#define DNS_SMALL 512
#define DNS_TCP_MESSAGES 4

struct dns_event {
    struct hdr h;
    u8 egress;
    u8 family;
    u16 server_port;
    u32 len; /* bytes of the message in data */
    u8 server[16];
    u8 data[DNS_MAX];
};
#define DNS_HEAD (sizeof(struct dns_event) - DNS_MAX)

/* What the messages of one packet share. */
struct dns_packet {
    u64 cgid;
    u8 egress;
    u8 family;
    u16 server_port;
    u8 server[16];
};

/* One record of `len` (1..room) message bytes at `off`, in a reservation of `room` bytes. */
static __always_inline int dns_copy(struct __sk_buff *skb, struct dns_packet *p, u32 off,
                                    u32 len, const u32 room) {
    struct dns_event *e = events.ringbuf_reserve(DNS_HEAD + room);
    if (!e) {
        count_drop(EV_DNS);
        return -1;
    }
    fill_bare_hdr(&e->h, EV_DNS, p->cgid);
    e->egress = p->egress;
    e->family = p->family;
    e->server_port = p->server_port;
    __builtin_memcpy(e->server, p->server, sizeof(e->server));
    e->len = 0;
    if (len > room)
        len = room;
    /* 1..room (a power of two), masked where the compiler cannot drop the mask as redundant,
     * so that the verifier sees the bound */
    u64 n = (u32)(len - 1), mask = room - 1;
    asm volatile("%0 &= %1" : "+r"(n) : "r"(mask));
    if (len > 0 && bpf_skb_load_bytes(skb, off, e->data, n + 1) == 0)
        e->len = n + 1;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

/* A message of `size` bytes at `off`, of which `len` are in this packet. */
static __always_inline void dns_message(struct __sk_buff *skb, struct dns_packet *p, u32 off,
                                        u32 len, u32 size) {
    if (len > DNS_MAX)
        len = DNS_MAX;
    int sent = len <= DNS_SMALL ? dns_copy(skb, p, off, len, DNS_SMALL)
                                : dns_copy(skb, p, off, len, DNS_MAX);
    if (sent == 0 && len < size)
        count_drop(EV_DNS); /* the message's tail is not in the record */
}

/* The length-prefixed messages of one TCP segment's payload [off, end). */
static __always_inline void dns_tcp(struct __sk_buff *skb, struct dns_packet *p, u32 off,
                                    u32 end) {
#pragma unroll
    for (int i = 0; i < DNS_TCP_MESSAGES; i++) {
        u16 head[3]; /* length prefix, then the message's id and flags */
        u16 qdcount = 0;
        if (off + 2 + 12 > end || bpf_skb_load_bytes(skb, off, head, sizeof(head)) < 0 ||
            bpf_skb_load_bytes(skb, off + 6, &qdcount, 2) < 0)
            return;
        u32 size = bpf_ntohs(head[0]);
        u16 flags = bpf_ntohs(head[2]);
        /* a query leaves (QR 0), an answer arrives (QR 1); opcode QUERY; one question */
        if (size < 12 || (flags >> 15) == p->egress || ((flags >> 11) & 0xF) != 0 ||
            bpf_ntohs(qdcount) != 1)
            return;
        u32 start = off + 2, here = end - start;
        dns_message(skb, p, start, size < here ? size : here, size);
        off = start + size;
    }
}

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
    if ((proto != 17 && proto != 6) || bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
        return;
    u16 server_port = bpf_ntohs(egress ? ports[1] : ports[0]);
    if (server_port != 53)
        return;
    struct dns_packet p = {};
    p.cgid = cgid;
    p.egress = egress;
    p.family = family;
    p.server_port = server_port;
    /* the resolver is the destination of a query and the source of an answer */
    if (family == 2)
        bpf_skb_load_bytes(skb, egress ? 16 : 12, p.server, 4);
    else
        bpf_skb_load_bytes(skb, egress ? 24 : 8, p.server, 16);
    if (proto == 6) {
        u8 doff = 0;
        if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1) == 0)
            dns_tcp(skb, &p, l4 + (doff >> 4) * 4, skb->len);
        return;
    }
    u32 off = l4 + 8, size = skb->len > off ? skb->len - off : 0;
    if (size >= 12)
        dns_message(skb, &p, off, size, size);
}

int on_skb_egress(struct __sk_buff *skb) {
    dns(skb, 1);
    return 1;
}

int on_skb_ingress(struct __sk_buff *skb) {
    dns(skb, 0);
    return 1;
}
