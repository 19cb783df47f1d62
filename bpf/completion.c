/* ngxscope capture, continued: a request's completion (ngx_http_free_request), where nginx
 * has just logged it. Joined after bpf/capture.c and bpf/reqlog.c (EV_REQ_LOG, and the
 * offsets in nginx's request struct both read), whose state and helpers it uses
 * (capture/tracer.py).
 *
 * While the capture samples (sample_ctl > 1), an HTTP/1 exchange whose payload was sampled
 * out costs no record at all unless a rule keeps it (events.h KEEP_*): it is counted here in
 * per-second aggregates (agg_counts, agg_hist: per worker, server block, $status and
 * upstream peer, with log-linear histograms of $request_time and $upstream_response_time),
 * from the values nginx logs, read in its request struct. User space drains them once a
 * second (capture/kcounts.py). The connection's next record is preceded by EV_COUNTED,
 * which tells the decoder where its counters stand.
 */

BPF_PERCPU_HASH(agg_counts, struct agg_key, struct agg_val, 4096);
BPF_PERCPU_HASH(agg_hist, struct hist_key, u64, 32768);
/* agg_ctl: bpf/capture.c */
/* $request_time above which a sampled-out exchange is kept (KEEP_SLOW), in microseconds,
 * per server block (r->srv_conf, written by user space from a moving p99), key 0: for all */
BPF_HASH(slow_us, u64, u64, 1024);

#define OFF_R_SRV_CONF 32            /* ngx_http_request_t.srv_conf (stable since 0.x) */
#define MAX_STATES 4

/* HdrHistogram.index (store/hdrhist.py) of v microseconds: exact below 256, then 128 linear
 * buckets per power of two. */
static __always_inline u16 hist_bucket(u64 v)
{
    if (v < (2 << HIST_SUB_BITS))
        return v;
    u32 bits = 0;
    u64 x = v;
    if (x >> 32) { bits += 32; x >>= 32; }
    if (x >> 16) { bits += 16; x >>= 16; }
    if (x >> 8)  { bits += 8;  x >>= 8; }
    if (x >> 4)  { bits += 4;  x >>= 4; }
    if (x >> 2)  { bits += 2;  x >>= 2; }
    if (x >> 1)  { bits += 1;  x >>= 1; }
    bits += x;   /* v's bit length */
    u32 shift = bits - HIST_SUB_BITS - 1;
    u64 i = (u64)(shift + 1) * (1 << HIST_SUB_BITS) + (v >> shift) - (1 << HIST_SUB_BITS);
    return i > HIST_SIZE - 1 ? HIST_SIZE - 1 : i;
}

static __always_inline void hist_add(struct hist_key *k, u64 us)
{
    k->bucket = hist_bucket(us);
    u64 zero = 0;
    u64 *v = agg_hist.lookup_or_try_init(k, &zero);
    if (v)
        *v += 1;
}

/* What nginx logs for r, read at its completion. */
struct completion {
    u64 status;
    s64 request_length;
    u64 sent;
    u64 srv;
    u64 peer;          /* the last attempt's peer name (ngx_str_t *) */
    u64 upstream_ms;   /* the last attempt's response time (ms) */
    u64 tries;
    u64 request_us;    /* $request_time in microseconds (whole ms on nginx's clock); ~0: unknown */
    u8  upstream_failed;
    u8  client_gone;   /* c->error or c->timedout: nginx gave up on its client mid-exchange */
};

/* The fields of ngx_http_request_t the completion reads, in one read of its first R_SPAN
 * bytes (a bpf_probe_read_user costs ~85 ns on this kind of VM whatever its size up to a
 * few hundred bytes, a 1.3 KiB one ~180 ns: one read instead of eight). Every offset used is
 * a multiple of 8 in the layouts capture/layout.py knows; another layout reads them apart. */
#define MAX2(a, b) ((a) > (b) ? (a) : (b))
#define R_SPAN_END (MAX2(MAX2(MAX2(OFF_R_STATUS, OFF_R_ERR_STATUS), MAX2(OFF_R_REQUEST_LENGTH, OFF_R_START_SEC + 8)), \
                         MAX2(OFF_R_UPSTREAM_STATES, OFF_R_SRV_CONF)) + 8)
#if (OFF_R_STATUS % 8 == 0) && (OFF_R_ERR_STATUS % 8 == 0) && (OFF_R_REQUEST_LENGTH % 8 == 0) && \
    (OFF_R_START_SEC % 8 == 0) && (OFF_R_UPSTREAM_STATES % 8 == 0) && R_SPAN_END <= 4096
#define R_SPAN_WORDS (R_SPAN_END / 8)
#else
#define R_SPAN_WORDS 0
#endif
/* and r->connection's fd, sent and bit-field word (c->timedout, c->error), read together */
#ifndef OFF_C_BITS
#define OFF_C_BITS (OFF_LOCAL_SOCKLEN + 56)
#endif
#define C_SPAN_LO (OFF_FD < OFF_SENT ? OFF_FD : OFF_SENT)
#define C_SPAN_END (MAX2(MAX2(OFF_FD + 4, OFF_SENT + 8), OFF_C_BITS + 4))
#define C_SPAN_BYTES (C_SPAN_END - C_SPAN_LO)
struct rspan {
    u64 w[R_SPAN_WORDS ? R_SPAN_WORDS : 1];
    u8 cb[C_SPAN_BYTES <= 512 ? C_SPAN_BYTES : 1];
};
BPF_ARRAY(rspan_scratch, struct rspan, MAX_CPUS);
#define RW(rs, off) ((rs)->w[(off) / 8])

/* r's first R_SPAN_END bytes (0: another layout, or unreadable: read field by field). */
static __always_inline struct rspan *read_rspan(u64 r)
{
    if (!R_SPAN_WORDS || !r)
        return 0;
    u32 cpu = bpf_get_smp_processor_id();
    struct rspan *rs = rspan_scratch.lookup(&cpu);
    if (!rs || bpf_probe_read_user(rs->w, R_SPAN_WORDS * 8, (void *)r) < 0)
        return 0;
    return rs;
}

/* owner_conn (bpf/capture.c) for a request whose first bytes are in rs: r->connection, then
 * its fd, c->sent and c's bit-field word in one read (rs->cb). */
static __always_inline int owner_conn_span(struct rspan *rs, u64 *c, s32 *fd, u64 *sent, u32 *bits)
{
    u32 sig = (u32)RW(rs, 0);
    if (sig != SIG_HTTP)
        return 0;
    *c = RW(rs, 8);
#if C_SPAN_BYTES <= 512
    if (bpf_probe_read_user(rs->cb, C_SPAN_BYTES, (void *)(*c + C_SPAN_LO)) < 0)
        return -1;
    __builtin_memcpy(fd, &rs->cb[OFF_FD - C_SPAN_LO], sizeof(*fd));
    __builtin_memcpy(sent, &rs->cb[OFF_SENT - C_SPAN_LO], sizeof(*sent));
    __builtin_memcpy(bits, &rs->cb[OFF_C_BITS - C_SPAN_LO], sizeof(*bits));
    return 1;
#else
    bpf_probe_read_user(sent, sizeof(*sent), (void *)(*c + OFF_SENT));
    bpf_probe_read_user(bits, sizeof(*bits), (void *)(*c + OFF_C_BITS));
    return bpf_probe_read_user(fd, sizeof(*fd), (void *)(*c + OFF_FD)) < 0 ? -1 : 1;
#endif
}

/* c->timedout (bit 11) or c->error (bit 12) of ngx_connection_t's first bit-field word:
 * a send or read on the client failed or timed out (a client that went away in the middle
 * of the response: nginx logs the status it began with, and no $request_completion) */
#define C_GONE_BITS (3u << 11)

static __always_inline void read_completion(struct completion *v, u64 r, u64 c, u64 clock, struct rspan *rs,
                                            u64 sent, u32 cbits)
{
    u64 err = 0, states = 0;
    u64 start[2] = {};
    int have_start = 0;
    if (rs) {
        v->status = RW(rs, OFF_R_STATUS);
        err = RW(rs, OFF_R_ERR_STATUS);
        v->request_length = (s64)RW(rs, OFF_R_REQUEST_LENGTH);
        v->sent = sent;
        v->srv = RW(rs, OFF_R_SRV_CONF);
        start[0] = RW(rs, OFF_R_START_SEC);
        start[1] = RW(rs, OFF_R_START_SEC + 8);
        have_start = 1;
        states = RW(rs, OFF_R_UPSTREAM_STATES);
    } else {
        bpf_probe_read_user(&cbits, sizeof(cbits), (void *)(c + OFF_C_BITS));
        bpf_probe_read_user(&v->status, sizeof(v->status), (void *)(r + OFF_R_STATUS));
        bpf_probe_read_user(&err, sizeof(err), (void *)(r + OFF_R_ERR_STATUS));
        bpf_probe_read_user(&v->request_length, sizeof(v->request_length), (void *)(r + OFF_R_REQUEST_LENGTH));
        bpf_probe_read_user(&v->sent, sizeof(v->sent), (void *)(c + OFF_SENT));
        bpf_probe_read_user(&v->srv, sizeof(v->srv), (void *)(r + OFF_R_SRV_CONF));
        if (clock && WALL_NS_OFFSET)
            have_start = bpf_probe_read_user(start, sizeof(start), (void *)(r + OFF_R_START_SEC)) == 0;
        bpf_probe_read_user(&states, sizeof(states), (void *)(r + OFF_R_UPSTREAM_STATES));
    }
    if (err)
        v->status = err;
    v->client_gone = (cbits & C_GONE_BITS) != 0;
    /* $request_time: nginx's clock now minus r->start_sec/start_msec, as nginx computes it */
    v->request_us = ~0ULL;
    if (clock && WALL_NS_OFFSET && have_start) {
        u64 now_ms = (clock + (u64)WALL_NS_OFFSET) / 1000000;
        u64 start_ms = start[0] * 1000 + start[1];
        v->request_us = now_ms >= start_ms ? (now_ms - start_ms) * 1000 : 0;
    }
    u64 arr[2] = {};   /* ngx_array_t: elts, nelts */
    if (!states || bpf_probe_read_user(arr, sizeof(arr), (void *)states) < 0 || !arr[0])
        return;
    v->tries = arr[1];
    if (arr[1] > 1)
        v->upstream_failed = 1;   /* nginx moved on to another attempt */
#pragma unroll
    for (int i = 0; i < MAX_STATES; i++) {
        if (i >= arr[1])
            break;
        u64 st[9] = {};   /* status, response_time, ..., peer (at 64): one read per state */
        u64 base = arr[0] + i * STATE_SIZE;
        bpf_probe_read_user(st, sizeof(st), (void *)base);
        if (st[0] == 0 || st[0] >= 500)
            v->upstream_failed = 1;
        v->upstream_ms = st[1];
        v->peer = st[8];
    }
}

static __always_inline u32 keep_rules(struct completion *v)
{
    u32 why = 0;
    u64 s = v->status;
    if (s >= 500)
        why |= KEEP_ERROR;
    if (s == 499 || s == 444 || s == 408 || (v->client_gone && s < 400))
        why |= KEEP_ABORTED;
    if (s == 400)
        why |= KEEP_MALFORMED;
    if (v->upstream_failed)
        why |= KEEP_UPSTREAM;
    if (v->request_us != ~0ULL) {
        u64 srv = v->srv, zero = 0;
        u64 *limit = slow_us.lookup(&srv);
        if (!limit)
            limit = slow_us.lookup(&zero);
        if (limit && *limit && v->request_us > *limit)
            why |= KEEP_SLOW;
    }
    int one = 1;
    u32 *on = agg_ctl.lookup(&one);
    if (on && *on) {   /* user space narrowed the rules, or (KEEP_ALL) keeps everything */
        why &= *on;
        if (*on & KEEP_ALL)
            why |= KEEP_ALL;
    }
    return why;
}

/* Count a sampled-out exchange that no rule keeps. */
static __always_inline void count_exchange(struct completion *v, u32 tgid)
{
    int zero = 0;
    u32 *ep = agg_ctl.lookup(&zero);
    u8 epoch = ep ? (*ep & 1) : 0;
    struct agg_key k = {};
    k.srv = v->srv;
    k.peer = v->peer;
    k.pid = tgid;
    k.status = v->status;
    k.epoch = epoch;
    struct agg_val none = {};
    struct agg_val *a = agg_counts.lookup_or_try_init(&k, &none);
    if (a) {
        a->n += 1;
        a->request_length += v->request_length;
        a->bytes_sent += v->sent;
        a->upstream_tries += v->tries;
        a->upstream_failed += v->upstream_failed;
    }
    struct hist_key hk = {};
    hk.srv = v->srv;
    hk.peer = v->peer;
    hk.pid = tgid;
    hk.cls = v->status / 100;
    hk.epoch = epoch;
    if (v->request_us != ~0ULL) {
        hk.which = HIST_REQUEST;
        hist_add(&hk, v->request_us);
    }
    if (v->tries) {
        hk.which = HIST_UPSTREAM;
        hist_add(&hk, v->upstream_ms * 1000);
    }
}

/* Send one direction of a kept exchange's staging as an ordinary payload record (EVF_STAGED):
 * from stream offset off, `moved` bytes, of which the first `have` are held at buf[base]. */
static __always_inline int stage_send(struct stage *sg, struct conn_state *st, u8 kind, u32 base, u32 have,
                                      u64 off, u64 moved, s32 fd, u64 pid_tgid)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct data_event *e = scratch.lookup(&cpu);
    if (!e)
        return 0;
    fill_header(&e->h, kind, bpf_ktime_get_ns(), pid_tgid, fd);
    e->h.conn_ts = st->conn_ts;
    e->h.flags = st->flags | EVF_STAGED;
    e->h.offset = off;
    e->h.len = moved;
    u64 n = have < moved ? have : moved;
    n = capped(n, STAGE_CAP);
    e->h.cap = n;
    if (n < moved)
        e->h.flags |= EVF_TRUNCATED;
    if (n && bpf_probe_read_kernel(e->data, n, &sg->buf[base ? STAGE_CAP : 0]) < 0)
        return 0;
    return submit(e, sizeof(struct ev_header) + n);
}

/* A sampled-out exchange on st that a rule keeps: send what was staged of it, so its row is
 * whole up to STAGE_CAP per direction. Returns 1 when all of it reached the ring buffer. */
static __always_inline int stage_flush(struct conn_state *st, s32 fd, u64 pid_tgid)
{
    struct conn_key key = {.pid = pid_tgid >> 32, .fd = fd};
    struct stage *sg = staged.lookup(&key);
    if (!sg || !st->req_start || sg->req_start != st->req_start)
        return 0;
    sg->req_start = 0;   /* sent once */
    u64 moved = st->recvd - sg->req_off;
    if (moved && !stage_send(sg, st, EV_RECV, 0, sg->req_len, sg->req_off, moved, fd, pid_tgid))
        return 0;
    if (sg->resp_started) {
        moved = st->sent - sg->resp_off;
        if (moved && !stage_send(sg, st, EV_SEND, 1, sg->resp_len, sg->resp_off, moved, fd, pid_tgid))
            return 0;
    }
    return 1;
}

/* A sampled-out exchange's first bytes, for its summary: its first read's are the start of
 * its staging (bpf/capture.c io_done), not read twice from nginx's memory. Called while the
 * staging is still its own (before stage_flush). */
static __always_inline void line_from_stage(struct conn_state *st, s32 fd, u32 tgid)
{
    if (!st->line_staged)
        return;
    st->line_staged = 0;
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct stage *sg = staged.lookup(&key);
    if (!sg || sg->req_start != st->req_start || bpf_probe_read_kernel(st->line, LINE_CAP, sg->buf) < 0)
        st->line_len = 0;
}

/* The request is finished: the summary starts over. The sampling decision stays until the
 * next request's first read: a pipelined request read together with this one (it has no
 * read of its own) shares its fate, and is summary-only if this one's read was dropped. */
static __always_inline void next_exchange(struct conn_state *st)
{
    st->req_start = 0;
    st->req_start_clock = 0;
    st->status = 0;
    st->shed = st->drop;
    st->line_len = 0;
    st->line_staged = 0;
    st->keep = 0;
}

/* The client connection of an ngx_http_request_t (r->connection follows the signature). */
static __always_inline int request_event(struct pt_regs *ctx, u8 kind, int count_request)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    u64 r = PT_REGS_PARM1(ctx);
    u64 c = 0, c_sent = 0;
    u32 c_bits = 0;
    s32 fd = -1;
    struct rspan *rs = 0;
#if REQ_LOG
    if (count_request)
        rs = read_rspan(r);
#endif
    if (rs) {
        if (!owner_conn_span(rs, &c, &fd, &c_sent, &c_bits))
            return 0;
    } else if (!owner_conn(r, SIG_HTTP, SIG_HTTP, &c, &fd)) {
        return 0;
    }
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    struct ev_header h = {};
    /* h.ts is read only when a record is sent: an exchange counted here needs no time but
     * nginx's clock (~60 ns less) */
    u64 ts = 0;
    fill_header(&h, kind, ts, pid_tgid, fd);
    h.req = r;
    if (kind == EV_UPSTREAM) {
        current_req.update(&tgid, &r);
        h.rid = (u32)r;
        if (st && st->cptr == c && st->drop)
            return 0;   /* sampled out: its attempts are not followed */
    }
    if (st && st->cptr != c && h2_stream_of(st, c)) {
        /* an HTTP/2 stream: its own byte counter; the connection's summary is not its own */
        h.ts = ts = bpf_ktime_get_ns();
        h.conn_ts = st->conn_ts;
        h.recvd = st->recvd;
        h.flags = st->flags | EVF_H2STREAM;
        if (count_request) {
            u64 sent = 0;
            bpf_probe_read_user(&sent, sizeof(sent), (void *)(c + OFF_SENT));
            h.sent = sent;
            h.rid = (u32)r;   /* which stream: its upstream events carry the same */
            req_log(&h, r, c, PT_REGS_IP(ctx));
        }
    } else if (st && st->cptr == c) {
        h.conn_ts = st->conn_ts;
        h.recvd = st->recvd;
        h.flags = st->flags;
        if (count_request) {
            st->requests += 1;
            if (st->tls_wsize) {   /* ngx_ssl_write is seen at its entry (bpf/capture.c) */
                if (!rs)
                    bpf_probe_read_user(&c_sent, sizeof(c_sent), (void *)(c + OFF_SENT));
                /* nginx frees no request with bytes still to write: a last write not
                 * counted in c->sent failed for good, its bytes were never sent */
                st->sent -= tls_unsent(st, c_sent);
                st->tls_wsize = 0;
            }
#if REQ_LOG
            if (st->drop && !(st->flags & EVF_NOMARK)) {
                struct completion v = {};
                read_completion(&v, r, c, h.clock, rs, c_sent, c_bits);
                u32 why = v.status != 101 ? keep_rules(&v) : KEEP_ERROR;
                if (!why) {   /* counted here, never sent */
                    count_exchange(&v, tgid);
                    if (st->counted < 0xFFFF)   /* saturates: 0 would mean "nothing to resync" */
                        st->counted += 1;
                    st->base_seq = st->requests;
                    st->base_recvd = st->recvd;
                    st->base_sent = st->sent;
                    next_exchange(st);
                    return 0;
                }
                st->keep = why;
                line_from_stage(st, fd, tgid);
                flush_counted(st, fd, pid_tgid);
                /* kept by a rule while counting is on (with KEEP_ALL, record
                 * --no-kernel-counts, a sampled-out exchange stays its summary) */
                if (!(why & KEEP_ALL) && stage_flush(st, fd, pid_tgid))
                    st->shed = 0;   /* whole (up to STAGE_CAP): an ordinary exchange */
            } else if (st->sampling) {
                st->keep = KEEP_SAMPLE;
            }
            flush_counted(st, fd, pid_tgid);
#endif
            if (!ts)
                h.ts = ts = bpf_ktime_get_ns();
            h.sent = st->sent;
            /* the per-exchange summary (see events.h) */
            h.status = st->status | ((u32)st->keep << KEEP_SHIFT);
            h.clock_span_us = 0;
            if (st->req_start && ts >= st->req_start)
                h.span_us = (ts - st->req_start) / 1000 + 1;
            if (st->req_start_clock && h.clock >= st->req_start_clock)
                h.clock_span_us = (h.clock - st->req_start_clock) / 1000 + 1;
            h.seq = st->requests;
            req_log(&h, r, c, PT_REGS_IP(ctx));
            if (st->shed) {
                /* the summary of a shed exchange also carries the request's first bytes */
                line_from_stage(st, fd, tgid);
                h.flags |= EVF_SHED | (st->drop ? EVF_SAMPLED : 0);
                u32 cpu = bpf_get_smp_processor_id();
                struct ev_done *d = done_scratch.lookup(&cpu);
                u32 n = st->line_len;
                if (d && n) {
                    d->h = h;
                    __builtin_memcpy(d->line, st->line, LINE_CAP);
                    next_exchange(st);
                    if (n > LINE_CAP)
                        n = LINE_CAP;
                    submit(d, sizeof(struct ev_header) + n);
                    return 0;
                }
            }
            next_exchange(st);
        }
        h.seq = st->requests;
    }
    if (!ts)
        h.ts = ts = bpf_ktime_get_ns();
    submit(&h, sizeof(h));
#if SYSCALL_IO
    if (!st && count_request)   /* accepted before the capture: known from now on */
        adopt_client(c, fd, pid_tgid);
#endif
    return 0;
}

/* void ngx_http_free_request(ngx_http_request_t *r, ngx_int_t rc): the request is logged. */
int free_request_enter(struct pt_regs *ctx) { return request_event(ctx, EV_REQ_DONE, 1); }

/* void ngx_http_upstream_init(ngx_http_request_t *r): the request goes to an upstream. */
int upstream_init_enter(struct pt_regs *ctx) { return request_event(ctx, EV_UPSTREAM, 0); }

