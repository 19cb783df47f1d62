/* Events the capture programs send to user space through the BPF ring buffer.
 * Each struct is declared here once; app/ngxscope/capture/events.py mirrors them with
 * ctypes and tests/capture/test_events_layout.py checks both agree (sizes, offsets). */
#ifndef NGXSCOPE_EVENTS_H
#define NGXSCOPE_EVENTS_H

#define EV_OPEN      1   /* first sight of a connection: addresses, role */
#define EV_RECV      2   /* bytes nginx read (plaintext for TLS) */
#define EV_SEND      3   /* bytes nginx wrote (plaintext for TLS) */
#define EV_SENDFILE  4   /* bytes nginx sent with sendfile(2): counted, not captured */
#define EV_CLOSE     5   /* ngx_close_connection */
#define EV_REQ_DONE  6   /* ngx_http_free_request: the request is finished and logged */
#define EV_CONNECT   7   /* connect(2) by a captured process: the peer address */
#define EV_FORK      8   /* a captured process forked (a new worker, usually) */
#define EV_EXIT      9   /* a captured process exited */
#define EV_UPSTREAM 10   /* ngx_http_upstream_init: the current request on this connection is proxied */
#define EV_STREAM_START 11  /* stream module (TCP proxy): a session on this client connection starts
                             * proxying (ngx_stream_core_content_phase); offset: bytes read so far */
#define EV_STREAM_DONE  12  /* ngx_stream_finalize_session: the session ends and is logged;
                             * offset = $bytes_received, aux = $bytes_sent, len = $status */
#define EV_CONNECTED    13  /* getsockopt(SO_ERROR): how a non-blocking connect(2) ended (offset:
                             * the socket error, 0 when connected) */

#define EVF_TLS        0x01  /* the connection is TLS (payload is the decrypted plaintext) */
#define EVF_CLIENT     0x02  /* accepted from a client (else nginx's own, e.g. upstream) */
#define EVF_TRUNCATED  0x04  /* fewer bytes captured than transferred */
#define EVF_SHED       0x08  /* REQ_DONE: payload events of this exchange were shed (ring buffer
                              * pressure); its status, sizes and times come from the summary */
#define EVF_H2STREAM   0x10  /* REQ_DONE/UPSTREAM: the request is an HTTP/2 stream: r->connection
                              * is the stream's fake connection (a copy of the real one, same fd
                              * and sockaddr, another address); REQ_DONE's aux is then that fake
                              * connection's `sent` (= $bytes_sent of the stream), not the
                              * real connection's counter, and the summary fields are unused */
#define EVF_NOMARK     0x20  /* no completion markers on this connection (fallback capture without
                              * ngx_* symbols): responses are framed by parsing HTTP/1 */
#define EVF_SAMPLED    0x40  /* REQ_DONE (with EVF_SHED): the payload was skipped on purpose, the
                              * exchange being sampled out while the capture is over its CPU
                              * budget (user space sets 1-in-N in sample_ctl) */

/* EV_REQ_DONE carries the kernel's per-exchange summary in header fields it does not
 * otherwise use, so every request is counted even when payload capture sheds load:
 *   len  status code of the response (from the first bytes nginx wrote; 0: unknown)
 *   cap  microseconds from the request's first byte read to this event, plus 1 (0: unknown)
 *   tid  the same span on nginx's cached clock, in microseconds, plus 1 (0: unknown) */

#define SOCKADDR_MAX 28      /* sizeof(struct sockaddr_in6) */
#define LINE_CAP 128         /* bytes of a request's start kept for the summary of a shed exchange */

struct ev_header {
    __u64 ts;        /* bpf_ktime_get_ns() */
    __u64 conn_ts;   /* connection identity: ktime of its first sighting (0: none) */
    __u64 offset;    /* RECV/SEND: stream offset of the first byte; REQ_DONE: recv offset */
    __u64 aux;       /* REQ_DONE: send offset; OPEN: ngx_connection_t address; FORK: child pid */
    __u64 clock;     /* nginx's own cached clock: ktime of the worker's last epoll_wait return */
    __u32 pid;       /* tgid */
    __u32 tid;       /* thread id; upstream-side RECV/SEND/SENDFILE and CONNECT with an owner,
                      * UPSTREAM, HTTP/2 REQ_DONE, STREAM_*: the low 32 bits of the request's
                      * (or stream session's) address, so multiplexed streams are told apart */
    __s32 fd;
    __u32 len;       /* bytes transferred by the call */
    __u32 cap;       /* bytes of payload that follow this header */
    __u8  kind;
    __u8  flags;
    __u16 seq;       /* REQ_DONE: requests finished on this connection (mod 2^16) */
};

struct ev_open {
    struct ev_header h;
    __u8  peer[SOCKADDR_MAX];   /* struct sockaddr_in / sockaddr_in6 as nginx holds it */
    __u8  local[SOCKADDR_MAX];
    __u32 peer_len;
    __u32 local_len;
};

/* EV_REQ_DONE of an exchange whose payload was shed: the header, then the first bytes nginx
 * read for the request (its request line, when the read began with it), so a shed exchange
 * still has a method and target. The record's length says how many bytes follow. */
struct ev_done {
    struct ev_header h;
    __u8  line[LINE_CAP];
};

/* The socket filter (bpf/wire.c) on a packet socket: it passes up packets themselves, cut in
 * the kernel, not ring-buffer events. User space fills `wire_listen` with nginx's listening
 * addresses and reads `wire_counts`; `wire_flows` is the filter's own per-connection state. */
#define WIRE_ADDR_LEN   16   /* IPv4 as ::ffff:a.b.c.d, IPv6 as is */
#define WIRE_TLS_CAP    2048 /* TLS handshake/alert bytes kept after the TCP header */
#define WIRE_FLOWS      65536

#define WIRE_SEEN       0    /* wire_counts: packets the filter examined */
#define WIRE_PASSED     1    /* ... passed to user space */
#define WIRE_RETRANS    2    /* ... passed as retransmitted segments (headers only) */
#define WIRE_COUNTERS   3

#define WIRE_SYN_SEEN    1   /* wire_flow.state: the client's SYN */
#define WIRE_SYNACK_SEEN 2   /* nginx's SYN-ACK */
#define WIRE_ESTABLISHED 3   /* the client's ACK of the handshake (passed once) */

/* one listening address; addr all zero (with family) is the wildcard (0.0.0.0 / ::) */
struct wire_listen {
    __u8  addr[WIRE_ADDR_LEN];
    __u16 port;      /* host byte order */
    __u8  family;    /* 4 or 6 */
    __u8  pad;
};

/* a connection, oriented client -> nginx */
struct wire_flow_key {
    __u8  client[WIRE_ADDR_LEN];
    __u8  server[WIRE_ADDR_LEN];
    __u16 client_port;
    __u16 server_port;
};

struct wire_flow {
    __u32 client_next;   /* sequence number after the highest byte the client sent */
    __u32 server_next;   /* ... nginx sent */
    __u8  state;
    __u8  pad[3];
};

#endif
