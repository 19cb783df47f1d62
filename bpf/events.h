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
                             * proxying (ngx_stream_core_content_phase); recvd: bytes read so far */
#define EV_STREAM_DONE  12  /* ngx_stream_finalize_session: the session ends and is logged
                             * (recvd, sent, status: nginx's own counters and $status) */
#define EV_CONNECTED    13  /* getsockopt(SO_ERROR): how a non-blocking connect(2) ended (sock_err) */
#define EV_REQ_LOG      14  /* ngx_http_free_request, right before its EV_REQ_DONE (same header
                             * but kind; struct ev_reqlog): nginx's own access-log values */
#define EV_COUNTED      15  /* HTTP/1 completions of sampled-out exchanges on this connection were
                             * counted in the kernel (agg_* maps) instead of sent: sent before the
                             * connection's next record. recvd, sent, seq: the connection's
                             * counters after the last of them; len: how many */

#define EVF_TLS        0x01  /* the connection is TLS (payload is the decrypted plaintext) */
#define EVF_CLIENT     0x02  /* accepted from a client (else nginx's own, e.g. upstream) */
#define EVF_TRUNCATED  0x04  /* fewer bytes captured than transferred */
#define EVF_SHED       0x08  /* REQ_DONE: payload events of this exchange were shed (ring buffer
                              * pressure); its status, sizes and times come from the summary */
#define EVF_H2STREAM   0x10  /* REQ_DONE/UPSTREAM: the request is an HTTP/2 stream: r->connection
                              * is the stream's fake connection (a copy of the real one, same fd
                              * and sockaddr, another address); REQ_DONE's `sent` is then that
                              * fake connection's (= $bytes_sent of the stream), not the real
                              * connection's counter, `rid` names the stream and the summary
                              * fields (status, span_us, clock_span_us) are unused */
#define EVF_NOMARK     0x20  /* no completion markers on this connection (fallback capture without
                              * ngx_* symbols): responses are framed by parsing HTTP/1 */
#define EVF_SAMPLED    0x40  /* REQ_DONE (with EVF_SHED): the payload was skipped on purpose, the
                              * exchange being sampled out while the capture is over its CPU
                              * budget (user space sets 1-in-N in sample_ctl) */
#define EVF_STAGED     0x80  /* RECV/SEND of a sampled-out exchange a rule kept at completion:
                              * its first bytes, held in the kernel (STAGE_CAP per direction)
                              * while it was sampled out; len: all the bytes moved then */
#define STAGE_CAP      2048  /* bytes of each direction of a sampled-out exchange held in the
                              * kernel until its completion decides (power of two) */

/* REQ_DONE of an HTTP/1 exchange: bits 16..23 of `status` say why it is a row while the
 * capture samples (0: sampling was off, every exchange is a row). A sampled-out exchange is
 * a row only when a rule kept it at its completion; else it is only counted (EV_COUNTED). */
#define KEEP_SAMPLE    0x01  /* the uniform sample (payload captured) */
#define KEEP_ERROR     0x02  /* $status >= 500 */
#define KEEP_ABORTED   0x04  /* 499 (client closed), 444 (closed without response), 408, or a
                               * client nginx gave up on mid-response (c->error, c->timedout) */
#define KEEP_UPSTREAM  0x08  /* a failed upstream attempt (no status or >= 500, or a retry) */
#define KEEP_MALFORMED 0x10  /* 400: a request nginx could not parse */
#define KEEP_SLOW      0x20  /* $request_time above its server block's threshold (slow_us) */
#define KEEP_ALL       0x40  /* counting in the kernel is off: every exchange is a row */
#define KEEP_SHIFT     16

#define SOCKADDR_MAX 28      /* sizeof(struct sockaddr_in6) */
#define LINE_CAP 128         /* bytes of a request's start kept for the summary of a shed exchange */

/* Per-CPU counters (BPF_PERCPU_ARRAY counters): the index of each. capture/events.py
 * names them COUNTER_NAMES[index] = the lower-case name after CNT_. */
#define CNT_EVENTS      0   /* records written to the ring buffer */
#define CNT_LOST        1   /* records the ring buffer had no room for */
#define CNT_TRUNCATED   2   /* payload records cut to PAYLOAD_CAP */
#define CNT_ARGS_FULL   3   /* calls not followed: the map of calls in flight was full */
#define CNT_CONNS_FULL  4   /* connections not followed: the connection map was full */
#define CNT_SHED        5   /* payload events shed under ring-buffer pressure */
#define CNT_SAMPLED     6   /* payload events skipped: their exchange was sampled out (CPU budget) */
#define CNT_TLS_RETRIES 7   /* ngx_ssl_write calls that repeat one SSL_write said WANT_WRITE to */
#define CNT_MAX         8

/* The ring buffer's accounting (BPF_ARRAY rbstate): the index of each position. */
#define RB_PRODUCED   0   /* bytes of ring-buffer records written (headers and padding included) */
#define RB_CONSUMED   1   /* the reader's consumer position, written by user space */

/* The header of every record. Slots whose meaning depends on the event kind are unions:
 * each kind writes and reads the member named for what it carries. */
struct ev_header {
    __u64 ts;        /* bpf_ktime_get_ns() */
    __u64 conn_ts;   /* connection identity: ktime of its first sighting (0: none) */
    union {
        __u64 offset;     /* RECV/SEND/SENDFILE: stream offset of the call's first byte */
        __u64 recvd;      /* REQ_DONE/UPSTREAM/CLOSE/STREAM_START: bytes read on the connection
                           * so far; STREAM_DONE: nginx's $bytes_received */
        __u64 ret;        /* CONNECT: connect(2)'s result (0, -EINPROGRESS, -errno) */
        __u64 sock_err;   /* CONNECTED: the socket error (0: connected) */
        __u64 parent;     /* FORK: the parent's pid */
    };
    union {
        __u64 owner;      /* upstream-side RECV/SEND/SENDFILE, CONNECT: conn_ts of the client
                           * connection whose request (or stream session) it serves (0: none) */
        __u64 sent;       /* REQ_DONE/CLOSE: bytes written on the connection so far; HTTP/2
                           * REQ_DONE (EVF_H2STREAM): the stream's own $bytes_sent; STREAM_DONE:
                           * nginx's $bytes_sent */
        __u64 cptr;       /* OPEN: the ngx_connection_t address (fallback: the listening fd) */
        __u64 req;        /* UPSTREAM: the request's address */
        __u64 child;      /* FORK: the child's pid */
    };
    __u64 clock;     /* nginx's own cached clock: ktime of the worker's last epoll_wait return */
    __u32 pid;       /* tgid */
    union {
        __u32 tid;            /* the calling thread (fill_header's default) */
        __u32 rid;            /* upstream-side RECV/SEND/SENDFILE and CONNECT with an owner,
                               * UPSTREAM, HTTP/2 REQ_DONE, STREAM_*: the low 32 bits of the
                               * request's (or stream session's) address, so multiplexed
                               * streams are told apart */
        __u32 clock_span_us;  /* REQ_DONE (HTTP/1 summary): microseconds from the request's
                               * first byte read to this event on nginx's cached clock, plus 1
                               * (0: unknown) */
    };
    __s32 fd;
    union {
        __u32 len;       /* RECV/SEND/SENDFILE: bytes transferred by the call */
        __u32 status;    /* REQ_DONE (HTTP/1 summary): the response status from the first bytes
                          * nginx wrote (0: unknown); STREAM_DONE: nginx's $status */
    };
    union {
        __u32 cap;       /* RECV/SEND: bytes of payload that follow this header */
        __u32 span_us;   /* REQ_DONE (HTTP/1 summary): microseconds from the request's first
                          * byte read to this event, plus 1 (0: unknown) */
    };
    __u8  kind;
    __u8  flags;
    __u16 seq;       /* REQ_DONE: requests finished on this connection (mod 2^16) */
};

/* The per-second aggregates of exchanges counted in the kernel (bpf/completion.c):
 * per-CPU hashes, double-buffered by `epoch` (agg_ctl[0]): user space drains the epoch the
 * programs are not writing, then makes it the current one. */
#define HIST_SUB_BITS 7      /* log-linear buckets: 128 per power of two (store/hdrhist.py) */
#define HIST_SIZE     4096
#define HIST_REQUEST  0      /* agg_hist.which: $request_time (microseconds, nginx's clock) */
#define HIST_UPSTREAM 1      /* the last attempt's $upstream_response_time */

struct agg_key {
    __u64 srv;       /* r->srv_conf: the server block (named in user space from nginx's memory) */
    __u64 peer;      /* the last upstream attempt's peer name (ngx_str_t *), 0: none */
    __u32 pid;
    __u16 status;    /* $status */
    __u8  epoch;
    __u8  pad;
};

struct agg_val {
    __u64 n;
    __u64 request_length;   /* sum of $request_length */
    __u64 bytes_sent;       /* sum of $bytes_sent */
    __u64 upstream_tries;   /* upstream attempts (the length of $upstream_addr's list) */
    __u64 upstream_failed;  /* exchanges with a failed attempt (counted, not kept: rule off) */
};

struct hist_key {
    __u64 srv;
    __u64 peer;
    __u32 pid;
    __u16 bucket;    /* hist index of the value in microseconds */
    __u8  cls;       /* $status / 100 */
    __u8  which;     /* HIST_REQUEST or HIST_UPSTREAM */
    __u8  epoch;
    __u8  pad[7];
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

/* EV_REQ_LOG: what nginx itself logs for the request, read from its ngx_http_request_t at
 * ngx_http_free_request (before the log phase runs there): $status is err_status, else
 * headers_out.status; $request_length, $bytes_sent (r->connection->sent). `strs` are
 * r->request_line, uri, args, exten, unparsed_uri, method_name, http_protocol as nginx holds
 * them (ngx_str_t: len, data address), `line` the bytes at line_addr: the request line nginx
 * stored, or (when it stored none: a request it rejected) what it read from the request's
 * start (r->request_start) up to the end of its buffer (r->header_in->last). The record's
 * length says how many bytes of `line` follow. Its header is its EV_REQ_DONE's but for the
 * kind and `rid`, which names the request (low 32 bits of r) as upstream events do. The
 * line sits in `tail`, after the record's min(nstates, UPSTATES_MAX) upstream states. */
#define REQLOG_LINE_CAP 512

/* The location nginx chose (r->loc_conf[0]: ngx_http_core_module's loc conf, whose ctx_index
 * is 0): `loc_conf` its address, `loc_name` the first bytes of its `name` (the location's
 * URI, regex or "@name" as written; "" at the server level), `loc_name_len` the whole length,
 * `loc_flags` LOCF_* bits. After the fixed fields, before the variable-length `line`. */
#define LOC_NAME_CAP 96
#define LOCF_NONAME   0x01   /* an `if` or `limit_except` block (named as its location) */
#define LOCF_NAMED    0x04   /* location @name */
#define LOCF_EXACT    0x08   /* location = URI */
#define LOCF_NOREGEX  0x10   /* location ^~ URI */
#define LOCF_REGEX    0x100  /* location ~ / ~* REGEX (clcf->regex set) */

/* One of r->upstream_states (ngx_http_upstream_state_t, stable since nginx 1.13.10) as nginx
 * logs it: $upstream_status (0: "-"), $upstream_response_time, $upstream_connect_time,
 * $upstream_header_time (ngx_msec_t as signed: -1 is "-"), and $upstream_addr's name
 * (*peer: the peer's address, or the group's name when nginx found no live peer). A state
 * with no peer (peer_len UPSTATE_GROUP) is where nginx went on to another group after an
 * internal redirect: its lists write " : " there instead of ", ". */
#define UPSTATES_MAX     8
#define UPSTATE_PEER_CAP 128
#define UPSTATE_GROUP    0xFFFFFFFF
struct ev_upstate {
    __u32 status;
    __u32 peer_len;                /* the name's whole length (UPSTATE_GROUP: no peer) */
    __s64 response_ms;
    __s64 connect_ms;
    __s64 header_ms;
    __u8  peer[UPSTATE_PEER_CAP];  /* its first bytes */
};

#define REQLOGF_CLOCK  0x01   /* now_* and start_* were read */
#define REQLOGF_STATES 0x02   /* r->upstream_states was read: nstates (0: none, no upstream) */
#define REQLOGF_UNIX   0x04   /* a unix listener's sockaddr (c->local_sockaddr, whole: $server_addr)
                               * follows the states in `tail`: REQLOG_UNIX_CAP bytes */
#define REQLOG_UNIX_CAP 112   /* sizeof(struct sockaddr_un), rounded up to 8 */

struct ev_reqlog {
    struct ev_header h;
    __s64 request_length;
    __u64 sent;
    __u64 status;
    __u64 err_status;
    __u64 line_addr;
    __u64 strs[14];
    __u64 loc_conf;
    __u32 loc_name_len;
    __u32 loc_flags;
    __u8  loc_name[LOC_NAME_CAP];
    __u32 remote_len;              /* r->connection->sockaddr as nginx logs it ($remote_addr, */
    __u8  remote[SOCKADDR_MAX];    /* $remote_port): the realip module's client, if it set one */
    __u64 now_sec;                 /* nginx's clock (*ngx_cached_time) as it logs the request: */
    __u64 now_msec;                /* $msec; $request_time is it minus r->start_sec/start_msec */
    __u64 start_sec;
    __u64 start_msec;
    __u32 rflags;                  /* REQLOGF_* */
    __u32 nstates;                 /* r->upstream_states->nelts: the first (up to UPSTATES_MAX) */
    /* follow as ev_upstate, then (REQLOGF_UNIX) the listener's sockaddr, then the line */
    __u8  tail[UPSTATES_MAX * sizeof(struct ev_upstate) + REQLOG_UNIX_CAP + REQLOG_LINE_CAP];
};

/* The socket filter (bpf/wire.c) on a packet socket: it passes up packets themselves, cut in
 * the kernel, not ring-buffer events. User space fills `wire_listen` with nginx's listening
 * addresses and reads `wire_counts`; `wire_slots` is the filter's own per-connection state. */
#define WIRE_ADDR_LEN   16   /* IPv4 as ::ffff:a.b.c.d, IPv6 as is */
#define WIRE_TLS_CAP    2048 /* TLS handshake/alert bytes kept after the TCP header */
#define WIRE_HELLO_MAX  32768 /* bytes of a client's first handshake flight (its ClientHello)
                               * passed whole, in one segment or across several */
#define WIRE_FLOWS      65536  /* wire_slots (bpf/wire.c: 1 << WIRE_SLOT_BITS) */

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
    __u8  closed;        /* a FIN or RST went by: a new connection may take its slot */
    __u16 hello_left;    /* bytes of the client's ClientHello still to come in later segments */
};

#endif
