/* ngxscope capture: uprobes on nginx's own connection I/O functions.
 *
 * Every ngx_* I/O function takes `ngx_connection_t *c` first; c->fd tells the socket.
 * Payload is copied on return (the byte count is only known then) into a per-CPU
 * scratch record and pushed to the ring buffer with its real length, so truncation
 * never hides sizes. Calls that moved no bytes (EAGAIN, errors) never leave the kernel.
 *
 * Compile-time parameters (-D from user space):
 *   PAYLOAD_CAP      bytes of payload kept per event (power of two)
 *   RINGBUF_PAGES    ring buffer size in pages (power of two)
 *   SHED_BYTES       payload events are shed (counted, not sent) while at least this many
 *                    bytes wait in the ring buffer; the per-exchange summary never is
 *
 * Records are written without waking the reader (BPF_RB_NO_WAKEUP): waking it is an
 * irq_work self-IPI per record, which costs more than the rest of a probe (a VM exit on
 * virtual machines). The reader polls on a timer instead and publishes how far it has
 * read (rbstate[RB_CONSUMED]), so the programs know how much is pending.
 *   FOLLOW_ALL       1: capture every process that runs the probed binary (--binary)
 *   OFF_FD, OFF_LISTENING, OFF_SENT, OFF_SOCKADDR, OFF_SOCKLEN, OFF_LOCAL_SOCKADDR,
 *   OFF_LOCAL_SOCKLEN, LISTENING_OFF_SOCKADDR, LISTENING_OFF_SOCKLEN: struct layout
 *   REQ_LOG          1: send EV_REQ_LOG (nginx's own access-log values) at each completion,
 *                    from ngx_http_request_t at OFF_R_STATUS, OFF_R_ERR_STATUS,
 *                    OFF_R_REQUEST_LENGTH, OFF_R_REQUEST_LINE, OFF_R_REQUEST_START,
 *                    OFF_R_HEADER_IN (capture/layout.py: they depend on the nginx build);
 *                    the location from r->loc_conf (OFF_R_LOC_CONF) and the core loc conf's
 *                    OFF_CLCF_FLAGS, OFF_CLCF_REGEX (-1: no PCRE)
 */
#include <uapi/linux/ptrace.h>
#include <uapi/linux/uio.h>
#include "events.h"
/* Loaded after bpf/common.c, then bpf/syscalls.c, bpf/stream.c and bpf/processes.c
 * (capture/tracer.py joins the texts:
 * bcc rewrites map calls and finds tracepoints only in the program text, not in headers). */




#ifndef SHED_BYTES
#define SHED_BYTES (RINGBUF_PAGES * 4096 / 4)
#endif

#define F_RECV      1
#define F_SEND      2
#define F_WRITEV    3
#define F_READV     4
#define F_SENDFILE  5

struct conn_key {
    __u32 pid;
    __s32 fd;
};

struct conn_state {
    __u64 conn_ts;
    __u64 cptr;
    __u64 sent;
    __u64 recvd;
    __u64 req_start;        /* ktime of the first byte read for the current request (0: none yet) */
    __u64 req_start_clock;  /* nginx's clock then */
    __u16 requests;
    __u16 status;           /* the current response's status, from its first bytes (0: not yet) */
    __u8  flags;
    __u8  shed;             /* payload of the current exchange was shed */
    __u8  drop;             /* the current exchange is sampled out: its payload is never sent */
    __u8  announced;        /* its EV_OPEN reached the ring buffer */
    __u8  line_len;         /* bytes in line */
    __u8  line[LINE_CAP];   /* the current request's first bytes, for a shed exchange's summary */
    __u8  sampling;         /* the capture was sampling when the current exchange was decided */
    __u8  keep;             /* KEEP_* rules that make the current exchange a row */
    __u8  line_staged;      /* line's bytes are the staging's first (copied from there if needed) */
    __u16 counted;          /* completions counted in the kernel since the last record (EV_COUNTED) */
    __u16 base_seq;         /* `requests` after the last of them */
    __u64 base_recvd;       /* `recvd` and `sent` then */
    __u64 base_sent;
    __u64 tls_wbase;        /* nginx's c->sent at the last ngx_ssl_write entry */
    __u64 tls_wsize;        /* the bytes that call was given, already sent to user space */
};

struct call_args {
    __u64 c;
    __u64 arg;      /* buffer, ngx_iovec_t *, or ngx_chain_t * */
    __s32 fd;
    __u8  tls;
    __u8  live;     /* saved by the call's entry, not yet taken by its return */
    __u16 iovcnt;   /* a writev: arg is then the struct iovec array, iovcnt its length */
};

BPF_HASH(conns, struct conn_key, struct conn_state, 65536);
BPF_ARRAY(conn_init, struct conn_state, 1);   /* what a new entry is created from */
/* A call's arguments from its entry to its return, per thread and function (call_save,
 * call_slot): each thread's slot stays (bpf/processes.c removes it when the thread exits). */
BPF_HASH(calls, u64, struct call_args, 16384);
#define HAVE_CALL_SLOTS 1
BPF_ARRAY(scratch, struct data_event, MAX_CPUS);
BPF_ARRAY(open_scratch, struct ev_open, MAX_CPUS);
BPF_ARRAY(done_scratch, struct ev_done, MAX_CPUS);
BPF_ARRAY(reqlog_scratch, struct ev_reqlog, MAX_CPUS);
BPF_HASH(current_req, u32, u64, 4096);
/* The first bytes of a sampled-out exchange, each direction (STAGE_CAP), held until its
 * completion: sent as its RECV/SEND records (EVF_STAGED) only when a keep rule holds
 * (bpf/completion.c), so kept rows are whole. buf: the request at 0, the response at
 * STAGE_CAP, room behind each for the verifier's view of a masked offset. */
struct stage {
    __u64 req_start;   /* conn_state.req_start of the exchange it holds */
    __u64 req_off;     /* the connection's read counter at its first read */
    __u64 resp_off;    /* its write counter at its first write */
    __u32 req_len;
    __u32 resp_len;
    __u8  resp_started;
    __u8  buf[3 * STAGE_CAP];
};
BPF_TABLE("lru_hash", struct conn_key, struct stage, staged, 4096);
BPF_ARRAY(stage_init, struct stage, 1);   /* what a new entry is created from */
/* Payload sampling set by user space while the capture is over its CPU budget: 0 or 1 =
 * every exchange with its payload, N = one exchange in N (at random), the others counted
 * from the kernel summary only. Decided once per exchange, at its first read. */
BPF_ARRAY(sample_ctl, u32, 1);
/* Counting sampled-out exchanges in the kernel (bpf/completion.c): [0]: the epoch being
 * written; [1]: KEEP_* rules on (0: all); with KEEP_ALL, nothing is counted: every exchange
 * is a row */
BPF_ARRAY(agg_ctl, u32, 2);

/* Keep a call's arguments for its return. The thread's slot is written in place once it
 * exists: a hash update takes a new element and frees the old one, a lookup does not, so a
 * call costs two lookups instead of an update, a lookup and a delete. */
static __always_inline void call_save(u64 key, struct call_args *a)
{
    a->live = 1;
    struct call_args *slot = calls.lookup(&key);
    if (slot) {
        *slot = *a;
        return;
    }
    if (calls.update(&key, a) < 0)
        count(CNT_ARGS_FULL, 1);
}

/* The arguments its entry saved, or 0 (not a call the entry kept). The caller empties
 * the slot (live = 0) once it takes them. */
static __always_inline struct call_args *call_slot(u64 key)
{
    struct call_args *slot = calls.lookup(&key);
    return slot && slot->live ? slot : 0;
}

static __always_inline u8 sampled_out(u8 *sampling)
{
    int zero = 0;
    u32 *n = sample_ctl.lookup(&zero);
    *sampling = 0;
    if (!n || *n <= 1)
        return 0;
    *sampling = 1;
    return bpf_get_prandom_u32() % *n != 0;
}

/* Completions counted in the kernel since st's last record: tell user space where the
 * connection's counters stand now, before its next record (bpf/completion.c counts them). */
static __always_inline void flush_counted(struct conn_state *st, s32 fd, u64 pid_tgid)
{
    if (!st->counted)
        return;
    struct ev_header h = {};
    fill_header(&h, EV_COUNTED, bpf_ktime_get_ns(), pid_tgid, fd);
    h.conn_ts = st->conn_ts;
    h.recvd = st->base_recvd;
    h.sent = st->base_sent;
    h.seq = st->base_seq;
    h.len = st->counted;
    h.flags = st->flags;
    if (submit(&h, sizeof(h)))
        st->counted = 0;
}

/* More than SHED_BYTES wait in the ring buffer: the reader is behind. */
static __always_inline int under_pressure(void)
{
    int a = RB_PRODUCED, b = RB_CONSUMED;
    u64 *p = rbstate.lookup(&a);
    u64 *c = rbstate.lookup(&b);
    if (!p || !c)
        return 0;
    return *p - *c >= SHED_BYTES;
}

static __always_inline void read_sockaddr(u8 *dst, u32 *dst_len, u64 ptr, u64 len_ptr)
{
    u32 len = 0;
    *dst_len = 0;
    if (!ptr)
        return;
    bpf_probe_read_user(&len, sizeof(len), (void *)len_ptr);
    bpf_probe_read_user(dst, SOCKADDR_MAX, (void *)ptr);
    *dst_len = len;   /* the true length: above SOCKADDR_MAX, a unix path was cut */
}

/* Send EV_OPEN for a connection: its addresses, read from nginx's ngx_connection_t. When
 * the ring buffer was full it is sent again with the connection's next event, so user space
 * never has to guess a connection's addresses later (its fd may be reused by then). */
static __always_inline void announce(struct conn_state *st, s32 fd, u64 ts, u64 pid_tgid)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct ev_open *o = open_scratch.lookup(&cpu);
    if (!o)
        return;
    u64 c = st->cptr;
    u64 listening = 0;
    bpf_probe_read_user(&listening, sizeof(listening), (void *)(c + OFF_LISTENING));
    fill_header(&o->h, EV_OPEN, ts, pid_tgid, fd);
    o->h.conn_ts = st->conn_ts;
    o->h.cptr = c;
    o->h.flags = st->flags;
    u64 peer = 0, local = 0;
    bpf_probe_read_user(&peer, sizeof(peer), (void *)(c + OFF_SOCKADDR));
    read_sockaddr(o->peer, &o->peer_len, peer, c + OFF_SOCKLEN);
    bpf_probe_read_user(&local, sizeof(local), (void *)(c + OFF_LOCAL_SOCKADDR));
    if (local) {
        read_sockaddr(o->local, &o->local_len, local, c + OFF_LOCAL_SOCKLEN);
    } else if (listening) {
        bpf_probe_read_user(&local, sizeof(local), (void *)(listening + LISTENING_OFF_SOCKADDR));
        read_sockaddr(o->local, &o->local_len, local, listening + LISTENING_OFF_SOCKLEN);
    } else {
        o->local_len = 0;
    }
    if (submit(o, sizeof(*o)))
        st->announced = 1;
}

/* A new state for connection c on fd, not announced yet (get_conn announces it). */
static __always_inline struct conn_state *new_conn(u64 c, s32 fd, u8 tls, u64 ts, u64 pid_tgid)
{
    struct conn_key key = {.pid = pid_tgid >> 32, .fd = fd};
    u64 listening = 0;
    bpf_probe_read_user(&listening, sizeof(listening), (void *)(c + OFF_LISTENING));
    int zero = 0;
    struct conn_state *init = conn_init.lookup(&zero);   /* zeros: not on the BPF stack */
    if (!init)
        return 0;
    if (conns.update(&key, init) < 0) {
        count(CNT_CONNS_FULL, 1);
        return 0;
    }
    struct conn_state *st = conns.lookup(&key);
    if (st) {
        st->conn_ts = ts;
        st->cptr = c;
        st->flags = (tls ? EVF_TLS : 0) | (listening ? EVF_CLIENT : 0);
    }
    return st;
}

/* The connection's state, created (and announced with EV_OPEN) on first sight; ts 0: the
 * time is read only if it is needed (a new or unannounced connection). */
static __always_inline struct conn_state *get_conn(u64 c, s32 fd, u8 tls, u64 ts, u64 pid_tgid)
{
    struct conn_key key = {.pid = pid_tgid >> 32, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    if (st && st->cptr == c && st->announced)
        return st;
    if (!ts)
        ts = bpf_ktime_get_ns();
    if (st && st->cptr == c) {
        if (!st->announced) {
            if (tls)   /* made at connect(2) (bpf/syscalls.c), before nginx's TLS handshake */
                st->flags |= EVF_TLS;
            announce(st, fd, ts, pid_tgid);
        }
        return st;
    }
    st = new_conn(c, fd, tls, ts, pid_tgid);
    if (st)
        announce(st, fd, ts, pid_tgid);
    return st;
}

#if SYSCALL_IO
/* An HTTP client connection nginx accepted before the capture started (no
 * ngx_http_init_connection seen) is known from its first completion on (bpf/completion.c):
 * its next exchanges are whole. Before, ngx_writev's uprobe made it known at its first write. */
static __always_inline void adopt_client(u64 c, s32 fd, u64 pid_tgid)
{
    u64 listening = 0;
    bpf_probe_read_user(&listening, sizeof(listening), (void *)(c + OFF_LISTENING));
    if (listening)
        get_conn(c, fd, 0, bpf_ktime_get_ns(), pid_tgid);
}
#endif

/* Is c an HTTP/2 stream's fake connection on the real connection st->cptr? nginx makes it
 * with a memcpy of the real one (ngx_http_v2_create_stream): same fd, and the same sockaddr
 * pointer (allocated once per accepted connection, so no other connection shares it). */
static __always_inline int h2_stream_of(struct conn_state *st, u64 c)
{
    u64 mine = 0, real = 0;
    if (!(st->flags & EVF_CLIENT))
        return 0;
    bpf_probe_read_user(&mine, sizeof(mine), (void *)(c + OFF_SOCKADDR));
    bpf_probe_read_user(&real, sizeof(real), (void *)(st->cptr + OFF_SOCKADDR));
    return mine && mine == real;
}

#define SIG_HTTP 0x50545448   /* "HTTP": ngx_http_request_t.signature */
#define SIG_STRM 0x4d525453   /* "STRM": ngx_stream_session_t.signature (the stream module) */

/* The connection of obj, an nginx request or stream session whose signature is sig_a or
 * sig_b (->connection follows the signature in both): *c, and its fd in *fd. Returns 0 when
 * obj is not one, -1 when the fd could not be read, 1 otherwise. */
static __always_inline int owner_conn(u64 obj, u32 sig_a, u32 sig_b, u64 *c, s32 *fd)
{
    u32 sig = 0;
    if (!obj || bpf_probe_read_user(&sig, sizeof(sig), (void *)obj) < 0 || (sig != sig_a && sig != sig_b))
        return 0;
    bpf_probe_read_user(c, sizeof(*c), (void *)(obj + 8));
    return bpf_probe_read_user(fd, sizeof(*fd), (void *)(*c + OFF_FD)) < 0 ? -1 : 1;
}

/* The client connection (its conn_ts) of request r, or 0: r->connection, then its fd.
 * r may also be a stream session (TCP proxy): s->connection sits at the same offset.
 * *drop tells whether that client's current exchange is sampled out. */
static __always_inline u64 request_client_drop(u32 tgid, u64 r, u8 *drop)
{
    u64 c = 0;
    s32 fd = -1;
    if (!owner_conn(r, SIG_HTTP, SIG_STRM, &c, &fd))
        return 0;
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st)
        return 0;
    if (st->cptr == c || h2_stream_of(st, c)) {
        *drop = st->drop;
        return st->conn_ts;
    }
    return 0;
}

static __always_inline u64 request_client(u32 tgid, u64 r)
{
    u8 drop = 0;
    return request_client_drop(tgid, r, &drop);
}

/* For nginx's own connections (upstreams), c->data is the request they serve: remember it
 * as the worker's current upstream request and return its client connection. */
static __always_inline u64 upstream_owner(u32 tgid, u64 c)
{
    u64 r = 0;
    bpf_probe_read_user(&r, sizeof(r), (void *)c);   /* c->data */
    u64 client = request_client(tgid, r);
    if (client)
        current_req.update(&tgid, &r);
    return client;
}

/* An upstream-side event's owner: its client connection, and (rid) the low 32 bits of the
 * request (or stream session) it serves, which tells HTTP/2 streams of one connection apart.
 * *drop: that client's exchange is sampled out, so this payload is not sent either. */
static __always_inline void owner_of(u32 tgid, u64 c, struct ev_header *h, u8 *drop)
{
    u64 r = 0;
    bpf_probe_read_user(&r, sizeof(r), (void *)c);   /* c->data */
    h->owner = request_client_drop(tgid, r, drop);
    h->rid = 0;
    if (h->owner) {
        current_req.update(&tgid, &r);
        h->rid = (u32)r;
    }
}

/* The bytes st's last ngx_ssl_write was given when that write failed for good: c->sent
 * (csent) has not moved since its entry (ssl_write_enter). 0 otherwise. */
static __always_inline u64 tls_unsent(struct conn_state *st, u64 csent)
{
    return st->tls_wsize && csent == st->tls_wbase && st->sent >= st->tls_wsize ? st->tls_wsize : 0;
}

/* A probed ngx_* call's connection (its first argument) and c->fd into *a: 0 when the
 * process is not a target or the fd cannot be read. */
static __always_inline int call_conn(struct pt_regs *ctx, u64 pid_tgid, struct call_args *a)
{
    if (!is_target(pid_tgid >> 32))
        return 0;
    a->c = PT_REGS_PARM1(ctx);
    return bpf_probe_read_user(&a->fd, sizeof(a->fd), (void *)(a->c + OFF_FD)) == 0;
}

/* A call's entry: its connection and buffer, for its return. c->fd is read there, and only
 * when the call moved bytes (about half of nginx's reads end in NGX_AGAIN): one read of
 * nginx's memory (~110 ns) less per such call. */
static __always_inline int enter(struct pt_regs *ctx, int fn, u8 tls)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_target(pid_tgid >> 32))
        return 0;
    struct call_args a = {};
    a.c = PT_REGS_PARM1(ctx);
    a.arg = PT_REGS_PARM2(ctx);
    a.tls = tls;
    call_save(pid_tgid ^ ((u64)fn << 56), &a);
    return 0;
}

/* Copy len bytes (at most what is left of PAYLOAD_CAP) from user address src to
 * e->data[off]; returns how many were copied. */
static __always_inline u32 copy_segment(struct data_event *e, u32 off, u64 len, u64 src)
{
    u64 o = off;
    opaque(o);
    o &= (PAYLOAD_CAP - 1);
    u64 cl = capped(len, PAYLOAD_CAP);
    bpf_probe_read_user(&e->data[o], cl, (void *)src);
    return cl;
}

/* Copy up to PAYLOAD_CAP of `n` bytes from a list of segments into e->data. */
static __always_inline u32 copy_iovecs(struct data_event *e, u64 iovs, u64 count_, u64 n)
{
    u32 off = 0;
    u64 left = n;
#pragma unroll
    for (int i = 0; i < MAX_SEGS; i++) {
        if (i >= count_ || left == 0 || off >= PAYLOAD_CAP)
            break;
        struct iovec iov = {};
        bpf_probe_read_user(&iov, sizeof(iov), (void *)(iovs + i * sizeof(struct iovec)));
        u64 chunk = iov.iov_len < left ? iov.iov_len : left;
        u32 room = PAYLOAD_CAP - off;
        if (chunk > room)
            chunk = room;
        off += copy_segment(e, off, chunk, (u64)iov.iov_base);
        left -= chunk;
    }
    return off;
}

static __always_inline u32 copy_chain(struct data_event *e, u64 chain, u64 n)
{
    u32 off = 0;
    u64 left = n;
#pragma unroll
    for (int i = 0; i < MAX_SEGS; i++) {
        if (!chain || left == 0 || off >= PAYLOAD_CAP)
            break;
        u64 buf = 0, last = 0, end = 0;
        bpf_probe_read_user(&buf, sizeof(buf), (void *)chain);
        bpf_probe_read_user(&last, sizeof(last), (void *)(buf + 8));   /* ngx_buf_t.last */
        bpf_probe_read_user(&end, sizeof(end), (void *)(buf + 40));    /* ngx_buf_t.end */
        u64 seg = end > last ? end - last : 0;
        u64 chunk = seg < left ? seg : left;
        u32 room = PAYLOAD_CAP - off;
        u64 take = chunk > room ? room : chunk;
        off += copy_segment(e, off, take, last);
        left -= chunk;
        bpf_probe_read_user(&chain, sizeof(chain), (void *)(chain + 8));  /* ngx_chain_t.next */
    }
    return off;
}

static __always_inline int io_done(u64 pid_tgid, struct call_args a, long ret, int fn, u8 kind,
                                   struct conn_state *known);

/* A sampled-out exchange begins on st: its staging starts empty. */
static __always_inline struct stage *stage_begin(struct conn_state *st, s32 fd, u32 tgid)
{
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct stage *sg = staged.lookup(&key);
    if (!sg) {
        int zero = 0;
        struct stage *init = stage_init.lookup(&zero);
        if (!init)
            return 0;
        staged.update(&key, init);
        sg = staged.lookup(&key);
        if (!sg)
            return 0;
    }
    sg->req_start = st->req_start;
    sg->req_off = st->recvd;
    sg->resp_off = 0;
    sg->req_len = 0;
    sg->resp_len = 0;
    sg->resp_started = 0;
    return sg;
}

/* Append up to what is left of STAGE_CAP of len bytes at user address src to the staged
 * direction at base (0: request, STAGE_CAP: response) holding *have bytes. */
static __always_inline void stage_copy(struct stage *sg, u32 base, u32 *have, u64 len, u64 src)
{
    u64 o = *have;
    if (o >= STAGE_CAP || !len)
        return;
    u64 room = STAGE_CAP - o;
    u64 n = len < room ? len : room;
    opaque(o);
    o &= (STAGE_CAP - 1);
    u64 cl = capped(n, STAGE_CAP);
    if (bpf_probe_read_user(&sg->buf[base + o], cl, (void *)src) == 0)
        *have += cl;
}

#define STAGE_IOVS 4   /* a writev's first iovecs staged (power of two) */

/* Stage the bytes a call moved on st's sampled-out exchange (before st's counters move).
 * Returns the stage when this call's bytes are the first its direction holds (the status
 * line is then read there, not again in nginx's memory), else 0. */
static __always_inline struct stage *stage_io(struct conn_state *st, struct stage *sg, struct call_args *a, long ret,
                                     int fn, u8 kind, u32 tgid)
{
    if (!sg) {   /* one lookup per call: stage_begin's when it just began */
        struct conn_key key = {.pid = tgid, .fd = a->fd};
        sg = staged.lookup(&key);
    }
    if (!sg || sg->req_start != st->req_start)
        return 0;
    u32 base = kind == EV_RECV ? 0 : STAGE_CAP;
    u32 *have = kind == EV_RECV ? &sg->req_len : &sg->resp_len;
    if (kind != EV_RECV && !sg->resp_started) {
        sg->resp_started = 1;
        sg->resp_off = st->sent;
    }
    if (*have >= STAGE_CAP)
        return 0;   /* full: only the counters move on */
    u32 had = *have;
    if (kind == EV_RECV ? st->recvd != sg->req_off + sg->req_len : st->sent != sg->resp_off + sg->resp_len)
        return 0;   /* bytes moved that it does not hold (a failed read of nginx's memory, a
                     * writev of more than STAGE_IOVS buffers): the rest would not follow them */
    if (fn == F_WRITEV) {
        u64 iovs = a->arg, cnt = a->iovcnt, left = ret;
        /* the iovecs it needs in one read (a read of nginx's memory costs about the same
         * for 16 bytes as for 64): a response is mostly two, its header and its body */
        struct iovec iov[STAGE_IOVS] = {};
        u64 nv = cnt < STAGE_IOVS ? cnt : STAGE_IOVS;
        u64 got = capped(nv * sizeof(struct iovec), STAGE_IOVS * sizeof(struct iovec));
        if (!got || bpf_probe_read_user(iov, got, (void *)iovs) < 0)
            return 0;
#pragma unroll
        for (int i = 0; i < STAGE_IOVS; i++) {
            if (i >= nv || !left || *have >= STAGE_CAP)
                break;
            u64 chunk = iov[i].iov_len < left ? iov[i].iov_len : left;
            u32 before = *have;
            stage_copy(sg, STAGE_CAP, have, chunk, (u64)iov[i].iov_base);
            if (*have - before != chunk && *have < STAGE_CAP)
                break;   /* a read failed: what follows would not be contiguous */
            left -= chunk;
        }
    } else if (fn == F_RECV || fn == F_SEND) {
        stage_copy(sg, base, have, ret, a->arg);
    }
    return had ? 0 : sg;
}

static __always_inline int leave(struct pt_regs *ctx, int fn, u8 kind)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct call_args *ap = call_slot(pid_tgid ^ ((u64)fn << 56));
    if (!ap)
        return 0;
    struct call_args a = *ap;
    ap->live = 0;
    long ret = PT_REGS_RC(ctx);
    if (ret <= 0)   /* NGX_AGAIN, NGX_ERROR, EOF: nothing moved */
        return 0;
    if (bpf_probe_read_user(&a.fd, sizeof(a.fd), (void *)(a.c + OFF_FD)) < 0)
        return 0;
    return io_done(pid_tgid, a, ret, fn, kind, 0);
}


/* A call on connection a.c moved ret bytes: account for them and send the payload.
 * `known`: its state, when the caller already looked it up. */
static __always_inline int io_done(u64 pid_tgid, struct call_args a, long ret, int fn, u8 kind,
                                   struct conn_state *known)
{
    /* the time is read only where it is used (~60 ns): a sampled-out call on a known
     * connection needs it only for a request's first read */
    u64 ts = 0;
    struct conn_state *st = known;
    if (!st)
        st = get_conn(a.c, a.fd, a.tls, 0, pid_tgid);
    else if (!st->announced)   /* as get_conn does: its EV_OPEN was lost to a full ring */
        announce(st, a.fd, ts = bpf_ktime_get_ns(), pid_tgid);
    u32 cpu = bpf_get_smp_processor_id();
    struct data_event *e = scratch.lookup(&cpu);
    if (!e)
        return 0;
    /* nginx's clock (a hash lookup) only where it is used: a sampled-out call's record is
     * never sent, and only a request's first read keeps the clock */
    fill_header_clock(&e->h, kind, ts, pid_tgid, a.fd, 0);
    e->h.len = ret;
    int shed = under_pressure();
    int dropped = 0;
    int want_status = 0, first_read = 0;
    struct stage *sg = 0, *head_sg = 0;
    if (st) {
        if (a.tls)   /* announced at accept time, before nginx knew it would be TLS */
            st->flags |= EVF_TLS;
        e->h.conn_ts = st->conn_ts;
        e->h.flags = st->flags;
        if (!(st->flags & EVF_CLIENT)) {
            if (!shed) {
                u8 drop = 0;
                owner_of(pid_tgid >> 32, a.c, &e->h, &drop);   /* owner: the client connection; rid: the request */
                dropped = drop;
            }
        } else if (kind == EV_RECV) {
            if (!st->req_start) {   /* the summary: when the request's first byte was read */
                if (!ts)
                    ts = bpf_ktime_get_ns();
                st->req_start = ts;
                st->shed = shed;   /* not what a pipelined predecessor left */
                st->drop = sampled_out(&st->sampling);
#if REQ_LOG
                /* while the kernel counts, a sampled-out exchange is counted at its
                 * completion or, kept, has nginx's own $request_time in its EV_REQ_LOG: its
                 * start on nginx's clock is not needed (a hash lookup, and nginx's clock read
                 * if this turn had not read it yet) */
                int one = 1;
                u32 *rules = agg_ctl.lookup(&one);
                if (!st->drop || !rules || (*rules & KEEP_ALL))
#endif
                    e->h.clock = process_clock(pid_tgid >> 32);
                st->req_start_clock = e->h.clock;
                if (st->drop)
                    sg = stage_begin(st, a.fd, pid_tgid >> 32);
                /* its first bytes (the request line when the read began with it): a
                 * sampled-out one's are staged below, and copied from there only when a
                 * summary needs them (bpf/completion.c line_from_stage) */
                st->line_len = 0;
                st->line_staged = 0;
                first_read = fn == F_RECV;
            }
            dropped = st->drop;
        } else {
            if (!st->status)
                want_status = 1;
            dropped = st->drop;
        }
        if (dropped && (st->flags & EVF_CLIENT))
            head_sg = stage_io(st, sg, &a, ret, fn, kind, pid_tgid >> 32);
        if (first_read) {
            u32 n = ret < LINE_CAP ? ret : LINE_CAP;
            if (head_sg && head_sg->req_len >= n)
                st->line_staged = 1;
            else if (bpf_probe_read_user(st->line, LINE_CAP, (void *)a.arg) < 0)
                n = 0;
            st->line_len = n;
        }
        if (kind == EV_RECV) {
            e->h.offset = st->recvd;
            st->recvd += ret;
        } else {
            e->h.offset = st->sent;
            st->sent += ret;
        }
        if (shed || dropped)
            st->shed = 1;
    }
    if (shed || dropped) {
        if (want_status && st && head_sg && head_sg->resp_len >= 12) {   /* staged just now */
            st->status = status_of(&head_sg->buf[STAGE_CAP]);
            want_status = 0;
        }
        /* the payload goes, the summary stays: only the status line's first bytes are read */
        if (want_status && st) {
            u64 p = a.arg;
            if (fn == F_WRITEV)
                bpf_probe_read_user(&p, sizeof(p), (void *)a.arg);   /* iovs[0].iov_base */
            u8 b[12] = {};
            if (ret >= 12 && bpf_probe_read_user(b, sizeof(b), (void *)p) == 0)
                st->status = status_of(b);
        }
        count(shed ? CNT_SHED : CNT_SAMPLED, 1);
        return 0;
    }
    if (!ts)
        ts = bpf_ktime_get_ns();
    e->h.ts = ts;
    if (!e->h.clock)
        e->h.clock = process_clock(pid_tgid >> 32);
    if (st && (st->flags & EVF_CLIENT))
        flush_counted(st, a.fd, pid_tgid);

    u32 cap = 0;
    if (fn == F_WRITEV) {
        cap = copy_iovecs(e, a.arg, a.iovcnt, ret);
    } else if (fn == F_READV) {
        cap = copy_chain(e, a.arg, ret);
    } else {
        /* a large TLS read (HTTP/2 frames) keeps every frame header */
        emit_chunks(e, a.arg, ret, want_status && st ? &st->status : 0);
        return 0;
    }
    u64 size = capped(cap, PAYLOAD_CAP);
    cap = size;
    e->h.cap = cap;
    if (want_status && st && cap >= 12)
        st->status = status_of(e->data);
    if (cap < (u64)ret) {
        e->h.flags |= EVF_TRUNCATED;
        count(CNT_TRUNCATED, 1);
    }
    submit(e, sizeof(struct ev_header) + size);
    return 0;
}

/* ssize_t ngx_ssl_recv(ngx_connection_t *c, u_char *buf, size_t size) */
int ssl_recv_enter(struct pt_regs *ctx)  { return enter(ctx, F_RECV, 1); }
int ssl_recv_leave(struct pt_regs *ctx)  { return leave(ctx, F_RECV, EV_RECV); }
/* ssize_t ngx_ssl_write(ngx_connection_t *c, u_char *data, size_t size), at its entry only:
 * a return probe is a second trap per response for one fact, the byte count, and that is
 * known here. nginx does not set SSL_MODE_ENABLE_PARTIAL_WRITE, so SSL_write writes all of
 * `size` or fails; ngx_ssl_write adds n to c->sent only when it succeeds. A call that finds
 * c->sent where the previous one left it is that call again (SSL_write said WANT_WRITE and
 * OpenSSL requires the same buffer, which nginx may have filled further since): only its
 * bytes past the previous call's size are new. The bytes of a write that then fails for
 * good (the connection closes) were sent to user space already: the completion and
 * ngx_close_connection find c->sent unmoved and take them off the byte count. */
int ssl_write_enter(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct call_args a = {};
    u64 size = PT_REGS_PARM3(ctx), sent = 0;
    if ((s64)size <= 0 || !call_conn(ctx, pid_tgid, &a))
        return 0;
    a.arg = PT_REGS_PARM2(ctx);
    a.tls = 1;
    bpf_probe_read_user(&sent, sizeof(sent), (void *)(a.c + OFF_SENT));
    struct conn_state *st = get_conn(a.c, a.fd, 1, 0, pid_tgid);
    if (!st)
        return io_done(pid_tgid, a, size, F_SEND, EV_SEND, 0);
    u64 seen = st->tls_wsize && sent == st->tls_wbase ? st->tls_wsize : 0;
    st->tls_wbase = sent;
    st->tls_wsize = size > seen ? size : seen;
    if (seen)
        count(CNT_TLS_RETRIES, 1);
    if (size <= seen)
        return 0;
    a.arg += seen;
    return io_done(pid_tgid, a, size - seen, F_SEND, EV_SEND, st);
}
/* ssize_t ngx_unix_recv(ngx_connection_t *c, u_char *buf, size_t size) */
int recv_enter(struct pt_regs *ctx)      { return enter(ctx, F_RECV, 0); }
int recv_leave(struct pt_regs *ctx)      { return leave(ctx, F_RECV, EV_RECV); }
/* ssize_t ngx_unix_send(ngx_connection_t *c, u_char *buf, size_t size) */
int send_enter(struct pt_regs *ctx)      { return enter(ctx, F_SEND, 0); }
int send_leave(struct pt_regs *ctx)      { return leave(ctx, F_SEND, EV_SEND); }
/* ssize_t ngx_writev(ngx_connection_t *c, ngx_iovec_t *vec), with --no-syscall-io (else
 * writev(2)'s tracepoints, bpf/syscalls.c): the iovec array and its length, as writev(2)'s */
int writev_enter(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct call_args a = {};
    if (!call_conn(ctx, pid_tgid, &a))
        return 0;
    u64 vec = PT_REGS_PARM2(ctx), cnt = 0;
    bpf_probe_read_user(&a.arg, sizeof(a.arg), (void *)vec);       /* ngx_iovec_t.iovs */
    bpf_probe_read_user(&cnt, sizeof(cnt), (void *)(vec + 8));     /* ngx_iovec_t.count */
    a.iovcnt = cnt > 0xFFFF ? 0xFFFF : cnt;
    call_save(pid_tgid ^ ((u64)F_WRITEV << 56), &a);
    return 0;
}
int writev_leave(struct pt_regs *ctx)    { return leave(ctx, F_WRITEV, EV_SEND); }
/* ssize_t ngx_readv_chain(ngx_connection_t *c, ngx_chain_t *chain, off_t limit) */
int readv_enter(struct pt_regs *ctx)     { return enter(ctx, F_READV, 0); }
int readv_leave(struct pt_regs *ctx)     { return leave(ctx, F_READV, EV_RECV); }

/* void ngx_http_init_connection(ngx_connection_t *c): an accepted HTTP connection, before
 * its first read: announced now, so reads seen at the syscall find its state. */
int http_init_enter(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_target(pid_tgid >> 32))
        return 0;
    u64 c = PT_REGS_PARM1(ctx);
    s32 fd = -1;
    if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(c + OFF_FD)) < 0)
        return 0;
    get_conn(c, fd, 0, bpf_ktime_get_ns(), pid_tgid);
    return 0;
}

/* void ngx_close_connection(ngx_connection_t *c) */
int close_enter(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    u64 c = PT_REGS_PARM1(ctx);
    s32 fd = -1;
    u64 listening = 0;
    bpf_probe_read_user(&fd, sizeof(fd), (void *)(c + OFF_FD));
    bpf_probe_read_user(&listening, sizeof(listening), (void *)(c + OFF_LISTENING));
    if (!listening)
        upstream_owner(tgid, c);   /* a failed upstream: the retry that follows is for its request */
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st || st->cptr != c)
        return 0;
    if (!st->announced && !st->sent && !st->recvd) {
        /* made at connect(2) and never used (the connect failed): user space never knew it */
        conns.delete(&key);
        return 0;
    }
    flush_counted(st, fd, pid_tgid);
    struct ev_header h = {};
    fill_header(&h, EV_CLOSE, bpf_ktime_get_ns(), pid_tgid, fd);
    h.conn_ts = st->conn_ts;
    h.recvd = st->recvd;
    h.sent = st->sent;
    if (st->tls_wsize) {
        u64 csent = 0;
        bpf_probe_read_user(&csent, sizeof(csent), (void *)(c + OFF_SENT));
        h.sent -= tls_unsent(st, csent);
    }
    h.flags = st->flags;
    conns.delete(&key);
    submit(&h, sizeof(h));
    return 0;
}

#define HAVE_CURRENT_REQ 1   /* for processes.c: forget current_req when a process exits */
