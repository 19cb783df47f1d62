/* ngxscope fallback capture, for nginx builds without ngx_* symbols.
 *
 * Plaintext connections: syscall tracepoints (read, recvfrom, readv, write, writev, sendto,
 * sendfile64) of the target processes, on sockets seen coming out of accept4 only (files,
 * pipes and upstream sockets are ignored). TLS connections: uprobes on OpenSSL's SSL_read,
 * SSL_write (and the _ex variants), in libssl or inside a binary with OpenSSL linked in; the
 * socket is learned from SSL_set_fd, or from the read or write syscall OpenSSL makes inside
 * the SSL call on the same thread. Syscalls on a TLS socket (handshake, ciphertext) are
 * skipped; a connection whose first bytes are a TLS handshake record counts as TLS even when
 * SSL_set_fd was not seen.
 *
 * There is no per-request completion marker here (nginx's own functions cannot be probed):
 * every event of a client connection carries EVF_NOMARK and user space frames responses by
 * parsing HTTP/1 (status line, Content-Length / chunked / close).
 *
 * Compile-time parameters: PAYLOAD_CAP, RINGBUF_PAGES, MAX_CPUS, FOLLOW_ALL (always 0 here).
 */
#include <uapi/linux/ptrace.h>
#include <uapi/linux/uio.h>
#include "events.h"
/* Loaded after bpf/common.c and before bpf/processes.c (capture/tracer.py joins the texts:
 * bcc rewrites map calls and finds tracepoints only in the program text, not in headers). */




#define F_BUF   1   /* read, recvfrom, write, sendto: one buffer */
#define F_IOV   2   /* readv, writev */

struct conn_key {
    __u32 pid;
    __s32 fd;
};

struct conn_state {
    __u64 conn_ts;
    __u64 cptr;     /* unused here (kept for the tracer's shared code) */
    __u64 sent;
    __u64 recvd;
    __u8  peer[SOCKADDR_MAX];
    __u32 peer_len;
    __s32 lfd;      /* the listening socket it was accepted from (-1: unknown) */
    __u8  flags;
    __u8  opened;   /* EV_OPEN sent */
};

struct sys_args {
    __u64 buf;
    __u64 cnt;
    __s32 fd;
    __u8  fn;
    __u8  kind;
};

struct ssl_args {
    __u64 ssl;
    __u64 buf;
    __u64 out;      /* _ex variants: size_t *readbytes / *written */
    __s32 fd;       /* learned from a syscall inside the call (-1: none) */
    __u32 depth;
    __u8  kind;
};

struct accept_args {
    __u64 addr;
    __u64 addrlen;
    __s32 lfd;
};

BPF_HASH(conns, struct conn_key, struct conn_state, 65536);
BPF_HASH(sys_calls, u64, struct sys_args, 16384);
BPF_HASH(ssl_calls, u64, struct ssl_args, 16384);
/* SSL object → its socket. Keyed by process too: workers forked from one master allocate
 * their SSL objects at the same addresses, so a pointer alone names another worker's
 * connection. LRU: SSL_free is not probed, stale pointers age out. */
struct ssl_key {
    __u32 pid;
    __u32 pad;
    __u64 ssl;
};
BPF_TABLE("lru_hash", struct ssl_key, s32, ssl_fd, 65536);
BPF_HASH(accepts, u64, struct accept_args, 4096);
BPF_ARRAY(scratch, struct data_event, MAX_CPUS);
BPF_ARRAY(open_scratch, struct ev_open, MAX_CPUS);

/* The tracked client connection (pid, fd); EV_OPEN goes out with its first bytes, when it is
 * known whether it is TLS. `create`: a connection accepted before the capture (TLS path). */
static __always_inline struct conn_state *get_conn(u64 pid_tgid, s32 fd, u8 tls, int create, u64 ts)
{
    struct conn_key key = {.pid = pid_tgid >> 32, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st) {
        if (!create)
            return 0;
        struct conn_state fresh = {};
        fresh.conn_ts = ts;
        fresh.lfd = -1;
        fresh.flags = EVF_CLIENT | EVF_NOMARK;
        if (conns.update(&key, &fresh) < 0) {
            count(CNT_CONNS_FULL, 1);
            return 0;
        }
        st = conns.lookup(&key);
        if (!st)
            return 0;
    }
    if (tls)
        st->flags |= EVF_TLS;
    if (st->opened)
        return st;
    st->opened = 1;
    if (!st->conn_ts)
        st->conn_ts = ts;
    u32 cpu = bpf_get_smp_processor_id();
    struct ev_open *o = open_scratch.lookup(&cpu);
    if (o) {
        fill_header(&o->h, EV_OPEN, ts, pid_tgid, fd);
        o->h.conn_ts = st->conn_ts;
        o->h.cptr = (u64)(s64)st->lfd;
        o->h.flags = st->flags;
        __builtin_memcpy(o->peer, st->peer, SOCKADDR_MAX);
        o->peer_len = st->peer_len;
        o->local_len = 0;
        submit(o, sizeof(*o));
    }
    return st;
}

/* The scratch record of a call on connection `st` that moved `ret` bytes, its header filled
 * and the stream offset accounted; null when there is no scratch. */
static __always_inline struct data_event *start_record(u64 pid_tgid, struct conn_state *st, s32 fd, u8 kind, u64 ret)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct data_event *e = scratch.lookup(&cpu);
    if (!e)
        return 0;
    fill_header(&e->h, kind, bpf_ktime_get_ns(), pid_tgid, fd);
    e->h.conn_ts = st->conn_ts;
    e->h.flags = st->flags;
    if (kind == EV_RECV) {
        e->h.offset = st->recvd;
        st->recvd += ret;
    } else {
        e->h.offset = st->sent;
        st->sent += ret;
    }
    return e;
}

/* One buffer moved `ret` bytes. */
static __always_inline void emit_buf(u64 pid_tgid, struct conn_state *st, s32 fd, u8 kind, u64 buf, u64 ret)
{
    struct data_event *e = start_record(pid_tgid, st, fd, kind, ret);
    if (e)
        emit_chunks(e, buf, ret, 0);
}

/* readv/writev moved `ret` bytes: one record per segment (the last one counts the rest). */
static __always_inline void emit_iov(u64 pid_tgid, struct conn_state *st, s32 fd, u8 kind, u64 iovs, u64 cnt, u64 ret)
{
    struct data_event *e = start_record(pid_tgid, st, fd, kind, ret);
    if (!e)
        return;
    u64 base = e->h.offset;
    u8 flags0 = e->h.flags;
    u64 done = 0;
#pragma unroll
    for (int i = 0; i < MAX_SEGS; i++) {
        if (i >= cnt || done >= ret)
            break;
        struct iovec iov = {};
        bpf_probe_read_user(&iov, sizeof(iov), (void *)(iovs + i * sizeof(struct iovec)));
        u64 left = ret - done;
        u64 len = iov.iov_len < left ? iov.iov_len : left;
        if (i == MAX_SEGS - 1 || i + 1 >= cnt)
            len = left;
        if (len == 0)
            continue;
        u64 n = len < PAYLOAD_CAP ? len : PAYLOAD_CAP;
        if (n > iov.iov_len)
            n = iov.iov_len;
        n = capped(n, PAYLOAD_CAP);
        bpf_probe_read_user(&e->data[0], n, iov.iov_base);
        e->h.offset = base + done;
        e->h.len = len;
        e->h.cap = n;
        e->h.flags = flags0;
        if (n < len) {
            e->h.flags |= EVF_TRUNCATED;
            count(CNT_TRUNCATED, 1);
        }
        submit(e, sizeof(struct ev_header) + n);
        done += len;
    }
}

/* ---------------------------------------------------------------- syscalls (plaintext) */

static __always_inline int sys_enter(s32 fd, u64 buf, u64 cnt, u8 fn, u8 kind)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;
    struct ssl_args *s = ssl_calls.lookup(&pid_tgid);
    if (s) {   /* OpenSSL's own I/O inside SSL_read/SSL_write: it tells the socket */
        if (s->fd < 0)
            s->fd = fd;
        return 0;
    }
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st || (st->flags & EVF_TLS))
        return 0;   /* not an accepted socket (a file, a pipe, an upstream), or TLS */
    struct sys_args a = {.buf = buf, .cnt = cnt, .fd = fd, .fn = fn, .kind = kind};
    if (sys_calls.update(&pid_tgid, &a) < 0)
        count(CNT_ARGS_FULL, 1);
    return 0;
}

/* The first bytes a client sends on a connection not known as TLS: a TLS handshake record
 * (0x16) means SSL_set_fd was not seen (built-in OpenSSL located without it, or no SSL probes
 * at all): mark it TLS, so its ciphertext is never decoded as HTTP. */
static __always_inline int first_bytes_are_tls(u64 pid_tgid, struct sys_args *a)
{
    struct conn_key key = {.pid = pid_tgid >> 32, .fd = a->fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st || st->opened || st->recvd || (st->flags & EVF_TLS))
        return 0;
    u64 p = a->buf;
    if (a->fn == F_IOV) {
        struct iovec iov = {};
        bpf_probe_read_user(&iov, sizeof(iov), (void *)a->buf);
        p = (u64)iov.iov_base;
    }
    u8 first = 0;
    bpf_probe_read_user(&first, 1, (void *)p);
    if (first != 0x16)
        return 0;
    st->flags |= EVF_TLS;
    return 1;
}

static __always_inline int sys_exit(long ret)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct sys_args *ap = sys_calls.lookup(&pid_tgid);
    if (!ap)
        return 0;
    struct sys_args a = *ap;
    sys_calls.delete(&pid_tgid);
    if (ret <= 0)
        return 0;
    if (a.kind == EV_RECV && first_bytes_are_tls(pid_tgid, &a))
        return 0;
    struct conn_state *st = get_conn(pid_tgid, a.fd, 0, 0, bpf_ktime_get_ns());
    if (!st || (st->flags & EVF_TLS))
        return 0;
    if (a.kind == EV_SENDFILE) {
        struct ev_header h = {};
        fill_header(&h, EV_SENDFILE, bpf_ktime_get_ns(), pid_tgid, a.fd);
        h.len = ret;
        h.conn_ts = st->conn_ts;
        h.flags = st->flags;
        h.offset = st->sent;
        st->sent += ret;
        submit(&h, sizeof(h));
    } else if (a.fn == F_IOV) {
        emit_iov(pid_tgid, st, a.fd, a.kind, a.buf, a.cnt, ret);
    } else {
        emit_buf(pid_tgid, st, a.fd, a.kind, a.buf, ret);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)     { return sys_enter(args->fd, (u64)args->buf, args->count, F_BUF, EV_RECV); }
TRACEPOINT_PROBE(syscalls, sys_exit_read)      { return sys_exit(args->ret); }
/* recv(fd, buf, 1, MSG_PEEK): nginx looking whether a client speaks TLS; nothing is consumed */
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    if (args->flags & 2 /* MSG_PEEK */)
        return 0;
    return sys_enter(args->fd, (u64)args->ubuf, args->size, F_BUF, EV_RECV);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)  { return sys_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv)    { return sys_enter(args->fd, (u64)args->vec, args->vlen, F_IOV, EV_RECV); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv)     { return sys_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_write)    { return sys_enter(args->fd, (u64)args->buf, args->count, F_BUF, EV_SEND); }
TRACEPOINT_PROBE(syscalls, sys_exit_write)     { return sys_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev)   { return sys_enter(args->fd, (u64)args->vec, args->vlen, F_IOV, EV_SEND); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev)    { return sys_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto)   { return sys_enter(args->fd, (u64)args->buff, args->len, F_BUF, EV_SEND); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto)    { return sys_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64) { return sys_enter(args->out_fd, 0, 0, F_BUF, EV_SENDFILE); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64)  { return sys_exit(args->ret); }

/* accept4(2): a client connection; its peer address comes back in the caller's buffer. */
TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_target(pid_tgid >> 32))
        return 0;
    struct accept_args a = {.addr = (u64)args->upeer_sockaddr, .addrlen = (u64)args->upeer_addrlen,
                            .lfd = args->fd};
    accepts.update(&pid_tgid, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct accept_args *ap = accepts.lookup(&pid_tgid);
    if (!ap)
        return 0;
    struct accept_args a = *ap;
    accepts.delete(&pid_tgid);
    long fd = args->ret;
    if (fd < 0)
        return 0;
    struct conn_key key = {.pid = pid_tgid >> 32, .fd = fd};
    struct conn_state fresh = {};
    fresh.conn_ts = bpf_ktime_get_ns();
    fresh.lfd = a.lfd;
    fresh.flags = EVF_CLIENT | EVF_NOMARK;
    u32 len = 0;
    if (a.addr && a.addrlen) {
        bpf_probe_read_user(&len, sizeof(len), (void *)a.addrlen);
        if (len > SOCKADDR_MAX)
            len = SOCKADDR_MAX;
        bpf_probe_read_user(fresh.peer, SOCKADDR_MAX, (void *)a.addr);
    }
    fresh.peer_len = len;
    if (conns.update(&key, &fresh) < 0)
        count(CNT_CONNS_FULL, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;
    struct conn_key key = {.pid = tgid, .fd = args->fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st)
        return 0;
    if (st->opened) {
        struct ev_header h = {};
        fill_header(&h, EV_CLOSE, bpf_ktime_get_ns(), pid_tgid, key.fd);
        h.conn_ts = st->conn_ts;
        h.recvd = st->recvd;
        h.sent = st->sent;
        h.flags = st->flags;
        submit(&h, sizeof(h));
    }
    conns.delete(&key);
    return 0;
}

/* ---------------------------------------------------------------- libssl (TLS plaintext) */

/* int SSL_set_fd(SSL *s, int fd): the socket of this SSL object, before the handshake. */
int ssl_set_fd_enter(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;
    u64 ssl = PT_REGS_PARM1(ctx);
    s32 fd = (s32)PT_REGS_PARM2(ctx);
    struct ssl_key sk = {.pid = tgid, .ssl = ssl};
    ssl_fd.update(&sk, &fd);
    struct conn_key key = {.pid = tgid, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    if (st)
        st->flags |= EVF_TLS;
    return 0;
}

static __always_inline int ssl_enter(struct pt_regs *ctx, u8 kind, int ex)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_target(pid_tgid >> 32))
        return 0;
    struct ssl_args *cur = ssl_calls.lookup(&pid_tgid);
    if (cur) {   /* nested (SSL_write calling SSL_write_ex...): the outer call reports */
        cur->depth += 1;
        return 0;
    }
    struct ssl_args a = {};
    a.ssl = PT_REGS_PARM1(ctx);
    a.buf = PT_REGS_PARM2(ctx);
    a.out = ex ? PT_REGS_PARM4(ctx) : 0;
    a.fd = -1;
    a.kind = kind;
    if (ssl_calls.update(&pid_tgid, &a) < 0)
        count(CNT_ARGS_FULL, 1);
    return 0;
}

static __always_inline int ssl_leave(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct ssl_args *ap = ssl_calls.lookup(&pid_tgid);
    if (!ap)
        return 0;
    if (ap->depth) {
        ap->depth -= 1;
        return 0;
    }
    struct ssl_args a = *ap;
    ssl_calls.delete(&pid_tgid);
    long ret = PT_REGS_RC(ctx);
    u64 n = 0;
    if (a.out) {
        if ((int)ret != 1)
            return 0;
        bpf_probe_read_user(&n, sizeof(n), (void *)a.out);
    } else {
        if ((int)ret <= 0)
            return 0;
        n = (u32)(int)ret;
    }
    if (n == 0)
        return 0;
    s32 fd = a.fd;
    struct ssl_key sk = {.pid = pid_tgid >> 32, .ssl = a.ssl};
    if (fd >= 0) {
        ssl_fd.update(&sk, &fd);
    } else {
        s32 *known = ssl_fd.lookup(&sk);
        if (!known)
            return 0;   /* served from OpenSSL's buffers before any socket I/O was seen */
        fd = *known;
    }
    struct conn_state *st = get_conn(pid_tgid, fd, 1, 1, bpf_ktime_get_ns());
    if (!st)
        return 0;
    emit_buf(pid_tgid, st, fd, a.kind, a.buf, n);
    return 0;
}

/* int SSL_read(SSL *s, void *buf, int num); int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes) */
int ssl_read_enter(struct pt_regs *ctx)     { return ssl_enter(ctx, EV_RECV, 0); }
int ssl_read_ex_enter(struct pt_regs *ctx)  { return ssl_enter(ctx, EV_RECV, 1); }
int ssl_write_enter(struct pt_regs *ctx)    { return ssl_enter(ctx, EV_SEND, 0); }
int ssl_write_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, EV_SEND, 1); }
int ssl_leave_any(struct pt_regs *ctx)      { return ssl_leave(ctx); }

