/* Socket filter (BPF_PROG_TYPE_SOCKET_FILTER) on a packet socket: the connection beneath
 * nginx's requests, cut in the kernel to what ngxscope needs.
 *
 * Passes, for TCP segments to or from one of nginx's listening addresses (`wire_listen`):
 *   - SYN, SYN-ACK, FIN, RST, the client's ACK of the handshake: headers only;
 *   - retransmitted data segments (of connections seen from their SYN): headers only;
 *   - segments beginning with a TLS handshake or alert record (content type 22 / 21):
 *     headers and at most WIRE_TLS_CAP bytes of records (ServerHello, alerts); the client's
 *     first handshake flight (its ClientHello) whole, up to WIRE_HELLO_MAX bytes, also when
 *     it spans several segments (a big session ticket, many extensions, a post-quantum key
 *     share): the segments that continue it pass as far as it goes (`hello_left`);
 *   - segments beginning with a ChangeCipherSpec record (the end of a client's handshake
 *     flight): headers and that 6-byte record only.
 * Drops everything else, application data above all. The return value of a socket filter is
 * how many bytes of the packet to keep, so the cut happens before any copy to user space.
 *
 * Only Ethernet-framed interfaces (loopback included). On loopback every packet crosses a
 * packet socket twice (as sent and as received): capture/wire.py sets PACKET_IGNORE_OUTGOING
 * on the loopback socket, so the kernel neither clones the sent copy nor runs this filter on
 * it; the check below only covers a kernel without that option.
 *
 * Cost: the filter runs for every packet of its interface (on loopback: every local
 * connection of the machine), so what is not nginx's is rejected first, with the port
 * bitmap `wire_ports` (an array lookup the JIT inlines) before any hash lookup, and the
 * Ethernet type, IPv4 and TCP headers are read with one helper call.
 *
 * cflags: -DLOOPBACK_IFINDEX=<ifindex of lo>
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_packet.h>
#include <uapi/linux/in.h>
#include "events.h"

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define TCP_TS_HLEN 32   /* a TCP header with the timestamp option (and two NOPs) */

BPF_HASH(wire_listen, struct wire_listen, __u8, 256);
/* The connections followed from their SYN: a two-way set-associative table in an array, not
 * a hash map. Every data segment of a followed connection looks its flow up and writes its
 * sequence number: an array lookup is inlined by the JIT and a slot is one cache line, where
 * a (LRU) hash lookup is a helper call hashing the 36-byte key and an element spread over
 * two lines with its list node. A SYN takes the free (never used, or closed) way of its pair,
 * else the way its hash names: a connection pushed out that way is followed no more (its
 * later segments pass as any unfollowed connection's: no retransmission count), as the LRU
 * map let go of its least recent connection when full. */
struct wire_slot {
    struct wire_flow_key key;
    struct wire_flow flow;
};
#define WIRE_SLOT_BITS 16
_Static_assert((1 << WIRE_SLOT_BITS) == WIRE_FLOWS, "WIRE_FLOWS slots");
BPF_ARRAY(wire_slots, struct wire_slot, WIRE_FLOWS);
BPF_PERCPU_ARRAY(wire_counts, __u64, WIRE_COUNTERS);
/* bit (port % 64) of word (port / 64): some listening address has this port (capture/wire.py) */
#define WIRE_PORT_WORDS 1024
BPF_ARRAY(wire_ports, __u64, WIRE_PORT_WORDS);

struct tcp_start {
    __be16 sport;
    __be16 dport;
    __be32 seq;
    __be32 ack;
    __u8   off;
    __u8   flags;
};

static __always_inline void count(int i)
{
    __u64 *c = wire_counts.lookup(&i);
    if (c)
        (*c)++;
}

static __always_inline int listening(const __u8 *addr, __u16 port, __u8 family)
{
    struct wire_listen k = {};
    __builtin_memcpy(k.addr, addr, WIRE_ADDR_LEN);
    k.port = port;
    k.family = family;
    if (wire_listen.lookup(&k))
        return 1;
    __builtin_memset(k.addr, 0, WIRE_ADDR_LEN);
    return wire_listen.lookup(&k) != 0;
}

static __always_inline int port_listened(__u16 port)
{
    int word = port >> 6;
    __u64 *bits = wire_ports.lookup(&word);
    return bits && (*bits >> (port & 63)) & 1;
}

/* the connection's key, oriented client -> nginx */
static __always_inline void make_key(struct wire_flow_key *key, const __u8 *src, const __u8 *dst,
                                     int to_server, __u16 sport, __u16 dport)
{
    __builtin_memcpy(key->client, to_server ? src : dst, WIRE_ADDR_LEN);
    __builtin_memcpy(key->server, to_server ? dst : src, WIRE_ADDR_LEN);
    key->client_port = to_server ? sport : dport;
    key->server_port = to_server ? dport : sport;
}

/* the first of the key's two slots */
static __always_inline __u32 flow_base(const struct wire_flow_key *k)
{
    __u32 w[9];
    __builtin_memcpy(w, k, sizeof(w));
    __u32 h = (w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9E3779B1u;
    h = (h ^ w[4] ^ w[5] ^ w[6] ^ w[7]) * 0x9E3779B1u;
    h = (h ^ w[8]) * 0x9E3779B1u;
    return (h >> (32 - WIRE_SLOT_BITS)) & ~1u;
}

static __always_inline int same_key(const struct wire_flow_key *a, const struct wire_flow_key *b)
{
    const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3]
        && *(const __u32 *)&x[4] == *(const __u32 *)&y[4];
}

static __always_inline struct wire_flow *flow_find(const struct wire_flow_key *k)
{
    __u32 i = flow_base(k);
    struct wire_slot *s = wire_slots.lookup(&i);
    if (s && same_key(&s->key, k))
        return &s->flow;
    i |= 1;
    s = wire_slots.lookup(&i);
    if (s && same_key(&s->key, k))
        return &s->flow;
    return 0;
}

/* A new connection's flow (a SYN): the slot of its pair that is free, else its first. */
static __always_inline void flow_start(const struct wire_flow_key *k, struct wire_flow *nf)
{
    __u32 i = flow_base(k), j = i | 1;
    struct wire_slot *s = wire_slots.lookup(&i);
    if (!s)
        return;
    if (s->flow.state && !s->flow.closed) {
        struct wire_slot *t = wire_slots.lookup(&j);
        if (t && (!t->flow.state || t->flow.closed))
            s = t;
    }
    __builtin_memcpy(&s->key, k, sizeof(*k));
    s->flow = *nf;
}

static __always_inline int pass(__u32 keep)
{
    count(WIRE_PASSED);
    return keep;
}

int wire_filter(struct __sk_buff *skb)
{
    count(WIRE_SEEN);
    if (skb->pkt_type == PACKET_OUTGOING && skb->ifindex == LOOPBACK_IFINDEX)
        return 0;

    /* the Ethernet type, an IPv4 header without options and the start of TCP: one read;
     * in a frame long enough, also the rest of a TCP header with timestamps (Linux's
     * usual 32 bytes) and the first two payload bytes, the TLS record type and version a
     * data segment is judged by (a second helper call per data segment otherwise) */
    struct {
        __be16 eth_type;
        __u8 ip[20];
        struct tcp_start th;
        __u8 opts[TCP_TS_HLEN - sizeof(struct tcp_start)];
        __u8 rec[2];
    } __attribute__((packed)) h4;
    int long_read = skb->len >= 12 + sizeof(h4);
    if (bpf_skb_load_bytes(skb, 12, &h4, long_read ? sizeof(h4) : __builtin_offsetof(typeof(h4), opts)))
        return 0;  /* shorter than any TCP/IPv4 frame */
    __u32 l3 = ETH_HLEN, l4, ip_end;
    __u8 family;
    struct tcp_start th;
    int to_port, from_port;   /* the destination / source port is one nginx listens on */
    __u8 src[WIRE_ADDR_LEN] __attribute__((aligned(8))) = {};
    __u8 dst[WIRE_ADDR_LEN] __attribute__((aligned(8))) = {};
    struct wire_flow_key key __attribute__((aligned(8))) = {};
    if (h4.eth_type == __builtin_bswap16(ETH_P_IP)) {
        __u8 *ip = h4.ip;
        __u32 ihl = (ip[0] & 0x0f) * 4;
        if (ihl < 20 || ip[9] != IPPROTO_TCP || ((ip[6] & 0x3f) | ip[7]))
            return 0;  /* not TCP, or a fragment */
        l4 = l3 + ihl;
        if (ihl == 20)
            __builtin_memcpy(&th, &h4.th, sizeof(th));
        else if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)))
            return 0;
        to_port = port_listened(__builtin_bswap16(th.dport));
        from_port = port_listened(__builtin_bswap16(th.sport));
        if (!to_port && !from_port)
            return 0;
        ip_end = l3 + (((__u32)ip[2] << 8) | ip[3]);
        src[10] = src[11] = dst[10] = dst[11] = 0xff;
        __builtin_memcpy(src + 12, ip + 12, 4);
        __builtin_memcpy(dst + 12, ip + 16, 4);
        family = 4;
    } else if (h4.eth_type == __builtin_bswap16(ETH_P_IPV6)) {
        __u8 *ip6 = h4.ip;
        if (ip6[6] != IPPROTO_TCP)
            return 0;  /* extension headers are not followed */
        l4 = l3 + 40;
        if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)))
            return 0;
        to_port = port_listened(__builtin_bswap16(th.dport));
        from_port = port_listened(__builtin_bswap16(th.sport));
        if (!to_port && !from_port)
            return 0;
        ip_end = l4 + (((__u32)ip6[4] << 8) | ip6[5]);
        if (bpf_skb_load_bytes(skb, l3 + 8, src, 16) || bpf_skb_load_bytes(skb, l3 + 24, dst, 16))
            return 0;
        family = 6;
    } else {
        return 0;
    }

    __u16 sport = __builtin_bswap16(th.sport), dport = __builtin_bswap16(th.dport);
    __u32 thl = (th.off >> 4) * 4;
    if (thl < 20)
        return 0;
    __u32 hdr_end = l4 + thl;
    __u32 payload = ip_end > hdr_end ? ip_end - hdr_end : 0;
    __u32 seq = __builtin_bswap32(th.seq);
    __u8 fl = th.flags;

    /* Which way it goes: when only one of its ports is a listening port, that says it, and
     * a connection already in wire_slots (entered at its SYN, to a listening address) is
     * nginx's without asking wire_listen: one slot-pair lookup per segment of a followed
     * connection. Otherwise (its SYN, a connection older than the capture, both ports
     * listening ports) the addresses decide. */
    int to_server = to_port;
    struct wire_flow *f = 0;
    if (to_port != from_port) {
        if (!to_server && payload == 0 && !(fl & (TH_SYN | TH_FIN | TH_RST)))
            return 0;  /* nginx's bare ACK or window update */
        make_key(&key, src, dst, to_server, sport, dport);
        f = flow_find(&key);
    }
    if (!f) {
        int was = to_server;
        if (to_port && listening(dst, dport, family))
            to_server = 1;
        else if (from_port && listening(src, sport, family))
            to_server = 0;
        else
            return 0;
        if (to_port == from_port || to_server != was) {
            make_key(&key, src, dst, to_server, sport, dport);
            f = flow_find(&key);
        }
    }

    if (fl & (TH_SYN | TH_FIN | TH_RST)) {
        if ((fl & TH_SYN) && !(fl & TH_ACK) && to_server) {
            if (f && f->client_next == seq + 1)
                return pass(hdr_end);  /* the same SYN again: the flow goes on as it was */
            struct wire_flow nf = {};
            nf.client_next = seq + 1;
            nf.state = WIRE_SYN_SEEN;
            if (f)   /* a new connection on the same addresses and ports */
                *f = nf;
            else
                flow_start(&key, &nf);
        } else if ((fl & TH_SYN) && !to_server) {
            if (f && f->state == WIRE_SYN_SEEN) {  /* a retransmitted SYN-ACK changes nothing:
                                                    * the client's duplicate ACKs are no
                                                    * handshake ACK */
                f->server_next = seq + 1;
                f->state = WIRE_SYNACK_SEEN;
            }
        }
        /* a RST or FIN keeps the flow, marked as one a new connection may take the place
         * of: a segment the other side still retransmits after it, its RST lost, is a
         * retransmission like any other */
        if (f && (fl & (TH_FIN | TH_RST)))
            f->closed = 1;
        return pass(hdr_end);  /* a FIN's data, if any, is application data: cut */
    }

    if (f && to_server && f->state == WIRE_SYNACK_SEEN && (fl & TH_ACK)) {
        f->state = WIRE_ESTABLISHED;
        if (payload == 0)
            return pass(hdr_end);
    }
    if (payload == 0)
        return 0;  /* a bare ACK or a window update */

    if (f && f->state >= WIRE_SYNACK_SEEN) {
        __u32 *next = to_server ? &f->client_next : &f->server_next;
        __u32 end = seq + payload;
        if ((__s32)(end - *next) <= 0) {
            count(WIRE_RETRANS);
            return pass(hdr_end);
        }
        *next = end;
    }

    if (f && to_server && f->hello_left) {  /* the rest of a ClientHello, not a record start */
        __u32 take = payload < f->hello_left ? payload : f->hello_left;
        f->hello_left -= take;
        return pass(hdr_end + take);
    }

    __u8 rec[9];
    if (long_read && hdr_end == ETH_HLEN + 20 + TCP_TS_HLEN && h4.eth_type == __builtin_bswap16(ETH_P_IP))
        __builtin_memcpy(rec, h4.rec, 2);
    else if (bpf_skb_load_bytes(skb, hdr_end, rec, 2))
        return 0;
    if (rec[0] == 22 && rec[1] == 3 && to_server && payload >= 9
        && !bpf_skb_load_bytes(skb, hdr_end, rec, 9) && rec[5] == 1) {
        /* a ClientHello: the whole message, over as many records (of 16 KiB at most) and
         * segments as it takes, up to WIRE_HELLO_MAX */
        __u32 msg = 4 + (((__u32)rec[6] << 16) | ((__u32)rec[7] << 8) | rec[8]);
        __u32 want = msg + 5 * ((msg + 16383) / 16384);
        if (want > WIRE_HELLO_MAX)
            want = WIRE_HELLO_MAX;
        if (want <= payload)
            return pass(hdr_end + want);
        if (f && f->state >= WIRE_SYNACK_SEEN)
            f->hello_left = want - payload;
        return pass(hdr_end + payload);
    }
    if ((rec[0] == 22 || rec[0] == 21) && rec[1] == 3)
        return pass(hdr_end + (payload < WIRE_TLS_CAP ? payload : WIRE_TLS_CAP));
    if (rec[0] == 20 && rec[1] == 3)  /* ChangeCipherSpec: the record alone (6 bytes), never
                                       * what follows it in the segment */
        return pass(hdr_end + (payload < 6 ? payload : 6));
    return 0;
}
