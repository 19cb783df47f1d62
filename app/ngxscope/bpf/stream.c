/* ngxscope capture, continued: the stream module (TCP proxy). Joined after bpf/capture.c
 * and bpf/syscalls.c (capture/tracer.py). */

/* The stream module (TCP proxy, ngx_stream_module.so or built in): its exported functions.
 * A session's I/O goes through ngx_unix_recv / ngx_writev like HTTP's; these two mark where
 * it starts proxying and where it ends (is logged). */
static __always_inline int stream_event(struct pt_regs *ctx, u8 kind)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    u64 s = PT_REGS_PARM1(ctx);
    u64 c = 0;
    s32 fd = -1;
    if (owner_conn(s, SIG_STRM, SIG_STRM, &c, &fd) <= 0)
        return 0;
    u64 ts = bpf_ktime_get_ns();
    /* the client connection is announced now: nginx connects upstream before reading it.
     * c->ssl sits 16 bytes before c->local_sockaddr (ssl, udp, local_sockaddr) in every layout */
    u64 ssl = 0;
    bpf_probe_read_user(&ssl, sizeof(ssl), (void *)(c + OFF_LOCAL_SOCKADDR - 16));
    struct conn_state *st = get_conn(c, fd, ssl ? 1 : 0, ts, pid_tgid);
    struct ev_header h = {};
    fill_header(&h, kind, ts, pid_tgid, fd);
    h.rid = (u32)s;
    if (st) {
        h.conn_ts = st->conn_ts;
        h.flags = st->flags;
    }
    if (kind == EV_STREAM_START) {
        current_req.update(&tgid, &s);   /* the connect(2) that follows is for this session */
        h.recvd = st ? st->recvd : 0;
    } else {
        /* nginx's own counters, as logged: $bytes_received, $bytes_sent, $status */
        bpf_probe_read_user(&h.recvd, sizeof(h.recvd), (void *)(s + 16));   /* s->received */
        bpf_probe_read_user(&h.sent, sizeof(h.sent), (void *)(c + OFF_SENT));  /* c->sent */
        h.status = (u32)PT_REGS_PARM2(ctx);                                 /* rc: $status */
    }
    submit(&h, sizeof(h));
    return 0;
}

/* ngx_int_t ngx_stream_core_content_phase(ngx_stream_session_t *s, ngx_stream_phase_handler_t *ph) */
int stream_content_enter(struct pt_regs *ctx) { return stream_event(ctx, EV_STREAM_START); }
/* void ngx_stream_finalize_session(ngx_stream_session_t *s, ngx_uint_t rc): logged, then closed */
int stream_finalize_enter(struct pt_regs *ctx) { return stream_event(ctx, EV_STREAM_DONE); }
