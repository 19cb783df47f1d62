/* ngxscope capture, continued: what the capture sees at syscall tracepoints rather than in
 * nginx (no trap into the worker): plaintext reads and ngx_writev's results (SYSCALL_IO),
 * sendfile(2), and connect(2)/getsockopt(SO_ERROR) for upstream attempts. Joined after
 * bpf/capture.c, whose state and helpers it uses (capture/tracer.py). */

#if SYSCALL_REGS
/* A syscall's own arguments at its exit tracepoint, from the user registers its entry saved
 * (x86-64: di, si, dx, r10). bpf_task_pt_regs gives a BTF pointer the verifier lets the
 * program load from directly: four loads, no helper read. This replaces an entry tracepoint
 * and a saved slot per call: the entry ran for every recvfrom, writev and sendfile of the
 * machine, and for nginx's recv calls that end in EAGAIN. */
struct sys_regs {
    u64 di, si, dx, r10;
};

static __always_inline void sys_args(struct sys_regs *r)
{
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    r->di = regs->di;
    r->si = regs->si;
    r->dx = regs->dx;
    r->r10 = regs->r10;
}
#endif

/* The arguments of the call a recvfrom/writev/sendfile exit ends (fn: F_RECV, F_WRITEV or
 * F_SENDFILE) into *a; 0 when there is nothing to do: the call failed or moved no bytes, it
 * was a peek, or (entry tracepoints) no entry kept it. */
static __always_inline int exit_args(u64 pid_tgid, long ret, u8 fn, struct call_args *a)
{
#if SYSCALL_REGS
    if (ret <= 0)
        return 0;
    struct sys_regs r;
    sys_args(&r);
    if (fn == F_RECV && (r.r10 & 2))   /* MSG_PEEK: nginx peeks at a new connection to tell
                                        * TLS from plain */
        return 0;
    a->arg = r.si;
    a->fd = (s32)r.di;
    if (fn == F_WRITEV)
        a->iovcnt = r.dx > 0xFFFF ? 0xFFFF : r.dx;
    return 1;
#else
    struct call_args *ap = call_slot(pid_tgid ^ ((u64)fn << 56));
    if (!ap)
        return 0;
    *a = *ap;
    ap->live = 0;
    return ret > 0;
#endif
}

#if SYSCALL_IO
/* Plaintext reads seen at the syscall instead of at ngx_unix_recv: a tracepoint costs the
 * worker ~0.1 us where a uprobe + uretprobe pair costs ~1.3 us (bench/probe_cost.py), and
 * nginx calls recv about twice per request (the second returns EAGAIN). Only sockets nginx
 * already announced as connections count (ngx_http_init_connection, the first write of an
 * upstream connection, a stream session): the connection pointer comes from their state.
 * TLS connections read ciphertext with read(2), never recv(2), so nothing is seen twice. */
#if !SYSCALL_REGS
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    if (args->flags & 2)   /* MSG_PEEK: nginx peeks at a new connection to tell TLS from plain */
        return 0;
    /* whether the socket is a connection is asked at the exit, once, and only when bytes
     * were read (about half of nginx's recv calls return EAGAIN) */
    struct call_args a = {};
    a.arg = (u64)args->ubuf;
    a.fd = (s32)args->fd;
    call_save(pid_tgid ^ ((u64)F_RECV << 56), &a);
    return 0;
}
#endif

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    long ret = args->ret;
    struct call_args a = {};
    if (!exit_args(pid_tgid, ret, F_RECV, &a))
        return 0;
    /* only a target's connections are in conns: no targets lookup needed */
    struct conn_key ck = {.pid = pid_tgid >> 32, .fd = a.fd};
    struct conn_state *st = conns.lookup(&ck);
    if (!st || (st->flags & EVF_TLS))
        return 0;
    a.c = st->cptr;
    return io_done(pid_tgid, a, ret, F_RECV, EV_RECV, st);
}

/* Plaintext writes (ngx_writev: nginx's only writev(2)) seen at the syscall, no trap into
 * nginx (~1.3 us less per response than its entry uprobe). As for recvfrom, the socket counts
 * when its state exists: an accepted connection's from ngx_http_init_connection (or, accepted
 * before the capture, its first completion: adopt_client), an upstream connection's from its
 * connect(2) below, or, for one nginx opened before the capture and takes from its keepalive
 * cache, from the request it is written for (adopt_upstream). */
#if !SYSCALL_REGS
TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    struct call_args a = {};
    a.arg = (u64)args->vec;
    a.fd = (s32)args->fd;
    a.iovcnt = args->vlen > 0xFFFF ? 0xFFFF : args->vlen;
    call_save(pid_tgid ^ ((u64)F_WRITEV << 56), &a);
    return 0;
}
#endif

#ifndef OFF_R_UPSTREAM
#define OFF_R_UPSTREAM 72   /* ngx_http_request_t.upstream (64 without NGX_HTTP_CACHE) */
#endif
#define OFF_S_UPSTREAM 72   /* ngx_stream_session_t.upstream (nginx 1.13-1.24) */

/* The upstream connection nginx has on fd for the worker's current request (or stream
 * session): r->upstream->peer.connection (s->upstream->peer.connection), when its fd is fd
 * and it is nginx's own (no listening). Its state is made, not announced (the first I/O
 * does). 0 when it is not that. */
static __always_inline struct conn_state *adopt_upstream(u64 pid_tgid, s32 fd)
{
    u32 tgid = pid_tgid >> 32;
    u64 *rp = current_req.lookup(&tgid);
    if (!rp)
        return 0;
    u64 r = *rp, u = 0, c = 0, listening = 0;
    u32 sig = 0;
    if (bpf_probe_read_user(&sig, sizeof(sig), (void *)r) < 0)
        return 0;
    if (sig == SIG_HTTP) {
        bpf_probe_read_user(&u, sizeof(u), (void *)(r + OFF_R_UPSTREAM));
        u += 16;   /* ngx_http_upstream_t.peer, after two handlers */
    } else if (sig == SIG_STRM) {
        bpf_probe_read_user(&u, sizeof(u), (void *)(r + OFF_S_UPSTREAM));   /* peer comes first */
    } else {
        return 0;
    }
    s32 cfd = -1;
    if (u < 4096 || bpf_probe_read_user(&c, sizeof(c), (void *)u) < 0 || !c
        || bpf_probe_read_user(&cfd, sizeof(cfd), (void *)(c + OFF_FD)) < 0 || cfd != fd)
        return 0;
    bpf_probe_read_user(&listening, sizeof(listening), (void *)(c + OFF_LISTENING));
    if (listening)
        return 0;
    return new_conn(c, fd, 0, bpf_ktime_get_ns(), pid_tgid);
}

/* ngx_writev's result: it always makes exactly one writev(2) (again after EINTR). */
TRACEPOINT_PROBE(syscalls, sys_exit_writev)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    long ret = args->ret;
    struct call_args a = {};
    if (!exit_args(pid_tgid, ret, F_WRITEV, &a))
        return 0;
    struct conn_key ck = {.pid = pid_tgid >> 32, .fd = a.fd};
    struct conn_state *st = conns.lookup(&ck);
    if (!st)
        st = adopt_upstream(pid_tgid, a.fd);   /* current_req: only a target's requests */
    if (!st || (st->flags & EVF_TLS))
        return 0;
    a.c = st->cptr;
    return io_done(pid_tgid, a, ret, F_WRITEV, EV_SEND, st);
}
#endif

/* sendfile(2): file bytes reach the socket without passing through nginx's memory. */
#if !SYSCALL_REGS
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    struct call_args a = {};
    a.fd = args->out_fd;
    call_save(pid_tgid ^ ((u64)F_SENDFILE << 56), &a);
    return 0;
}
#endif
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    long ret = args->ret;
    struct call_args a = {};
    if (!exit_args(pid_tgid, ret, F_SENDFILE, &a))
        return 0;
    s32 fd = a.fd;
    struct conn_key ck = {.pid = pid_tgid >> 32, .fd = fd};
    struct conn_state *st = conns.lookup(&ck);
#if SYSCALL_REGS
    if (!st) {   /* not a known connection: still reported for a target (a file to a pipe...) */
        u32 tgid = pid_tgid >> 32;
        if (!targets.lookup(&tgid))
            return 0;
    }
#endif
    int pressure = under_pressure();
    if (pressure || (st && st->drop)) {
        if (st) {
            st->sent += ret;
            st->shed = 1;
        }
        count(pressure ? CNT_SHED : CNT_SAMPLED, 1);
        return 0;
    }
    struct ev_header h = {};
    fill_header(&h, EV_SENDFILE, bpf_ktime_get_ns(), pid_tgid, fd);
    h.len = ret;
    if (st) {
        h.conn_ts = st->conn_ts;
        h.flags = st->flags;
        h.offset = st->sent;
        st->sent += ret;
        if (st->flags & EVF_CLIENT)
            flush_counted(st, fd, pid_tgid);
        if (!(st->flags & EVF_CLIENT)) {   /* a request body buffered to disk, sent upstream */
            u8 drop = 0;
            owner_of(pid_tgid >> 32, st->cptr, &h, &drop);
        }
    }
    submit(&h, sizeof(h));
    return 0;
}

/* connect(2) by a captured process: where its upstream connections go, for which request,
 * and whether the connect failed at once (a refused peer nginx will retry). With
 * SYSCALL_REGS its arguments are read at the exit: no sys_enter_* tracepoint is attached at
 * all then, and every syscall of the machine (not only connect's) skips the enter side's
 * perf_syscall_enter. */
struct connect_args {
    u64 addr;
    s32 fd;
    u32 len;
};
#if !SYSCALL_REGS
BPF_HASH(connects, u64, struct connect_args, 4096);

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    struct connect_args a = {};
    a.addr = (u64)args->uservaddr;
    a.fd = args->fd;
    a.len = args->addrlen;
    connects.update(&pid_tgid, &a);
    return 0;
}
#endif

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
#if SYSCALL_REGS
    if (!targets.lookup(&tgid))
        return 0;
    struct sys_regs regs;
    sys_args(&regs);
    struct connect_args a = {.addr = regs.si, .fd = (s32)regs.di, .len = (u32)regs.dx};
#else
    struct connect_args *ap = connects.lookup(&pid_tgid);
    if (!ap)
        return 0;
    struct connect_args a = *ap;
    connects.delete(&pid_tgid);
#endif
    u32 cpu = bpf_get_smp_processor_id();
    struct ev_open *o = open_scratch.lookup(&cpu);
    if (!o)
        return 0;
    fill_header(&o->h, EV_CONNECT, bpf_ktime_get_ns(), pid_tgid, a.fd);
    o->h.ret = (u64)args->ret;   /* 0, -EINPROGRESS, -ECONNREFUSED ... */
    u64 *r = current_req.lookup(&tgid);
    o->h.rid = 0;
    if (r) {
        /* sent even for a sampled-out exchange: the decoder must learn every upstream
         * socket's peer, or a later sampled-in request on the same (kept-alive) socket would
         * be given the peer of an earlier socket that had the same fd */
        o->h.owner = request_client(tgid, *r);
        o->h.rid = o->h.owner ? (u32)*r : 0;   /* the request (or stream session) it is for */
    }
    bpf_probe_read_user(o->peer, SOCKADDR_MAX, (void *)a.addr);
    o->peer_len = a.len;   /* the true length: above SOCKADDR_MAX, a unix path was cut */
    o->local_len = 0;
    submit(o, sizeof(*o));
#if SYSCALL_IO
    /* the connection is known from now on (its first write may come in a later turn of
     * nginx's loop, for another current request) */
    if (r && (args->ret == 0 || args->ret == -115))   /* -EINPROGRESS */
        adopt_upstream(pid_tgid, a.fd);
#endif
    return 0;
}

/* getsockopt(fd, SOL_SOCKET, SO_ERROR) by a captured process: nginx learns how its
 * non-blocking connect(2) ended (the stream proxy's $upstream_connect_time is taken then).
 * EV_CONNECTED: offset = the socket error (0: connected). */
struct sockerr_args {
    u64 optval;
    s32 fd;
};
#if !SYSCALL_REGS
BPF_HASH(sockerrs, u64, struct sockerr_args, 1024);

TRACEPOINT_PROBE(syscalls, sys_enter_getsockopt)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid) || args->level != 1 || args->optname != 4)   /* SOL_SOCKET, SO_ERROR */
        return 0;
    struct sockerr_args a = {.optval = (u64)args->optval, .fd = args->fd};
    sockerrs.update(&pid_tgid, &a);
    return 0;
}
#endif

TRACEPOINT_PROBE(syscalls, sys_exit_getsockopt)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
#if SYSCALL_REGS
    u32 tgid = pid_tgid >> 32;
    if (args->ret != 0 || !targets.lookup(&tgid))
        return 0;
    struct sys_regs regs;
    sys_args(&regs);
    if (regs.si != 1 || regs.dx != 4)   /* SOL_SOCKET, SO_ERROR */
        return 0;
    struct sockerr_args a = {.optval = regs.r10, .fd = (s32)regs.di};
#else
    struct sockerr_args *ap = sockerrs.lookup(&pid_tgid);
    if (!ap)
        return 0;
    struct sockerr_args a = *ap;
    sockerrs.delete(&pid_tgid);
    if (args->ret != 0)
        return 0;
#endif
    s32 err = 0;
    bpf_probe_read_user(&err, sizeof(err), (void *)a.optval);
    struct ev_header h = {};
    fill_header(&h, EV_CONNECTED, bpf_ktime_get_ns(), pid_tgid, a.fd);
    h.sock_err = (u64)(s64)err;
    submit(&h, sizeof(h));
    return 0;
}
