/* ngxscope capture, continued: EV_REQ_LOG, what nginx logs for a request (its status,
 * lengths, request line, location, client, clock and r->upstream_states), read from its
 * ngx_http_request_t when ngx_http_free_request runs (bpf/completion.c calls req_log just
 * before the EV_REQ_DONE it precedes). Joined after bpf/capture.c, whose state and helpers
 * it uses, and before bpf/completion.c (capture/tracer.py).
 */

#define OFF_R_UPSTREAM_STATES (OFF_R_HEADER_IN - 16)   /* upstream_states, pool, header_in */
#define OFF_R_START_SEC (OFF_R_REQUEST_LINE - 32)      /* start_sec, start_msec, method, http_version */
#define STATE_SIZE 72                /* sizeof(ngx_http_upstream_state_t), 1.22 */

#ifndef REQ_LOG
#define REQ_LOG 0
#endif

#if REQ_LOG
/* The location that served r (see struct ev_reqlog): r->loc_conf[0] is the core module's
 * ngx_http_core_loc_conf_t, which starts with its name (ngx_str_t), then (OFF_CLCF_REGEX,
 * with PCRE) the regex, then the flag bits at OFF_CLCF_FLAGS. */
static __always_inline void loc_of(struct ev_reqlog *l, u64 r)
{
    u64 confs = 0, clcf = 0, name[2] = {};
    u32 bits = 0;
    l->loc_conf = 0;
    l->loc_name_len = 0;
    l->loc_flags = 0;
    bpf_probe_read_user(&confs, sizeof(confs), (void *)(r + OFF_R_LOC_CONF));
    if (confs)
        bpf_probe_read_user(&clcf, sizeof(clcf), (void *)confs);
    if (!clcf || bpf_probe_read_user(name, sizeof(name), (void *)clcf) < 0)
        return;
    l->loc_conf = clcf;
    bpf_probe_read_user(&bits, sizeof(bits), (void *)(clcf + OFF_CLCF_FLAGS));
    l->loc_flags = bits & 0x1f;
#if OFF_CLCF_REGEX >= 0
    u64 rx = 0;
    bpf_probe_read_user(&rx, sizeof(rx), (void *)(clcf + OFF_CLCF_REGEX));
    if (rx)
        l->loc_flags |= LOCF_REGEX;
#endif
    u64 n = name[0];
    l->loc_name_len = (u32)n;
    if (n > LOC_NAME_CAP)
        n = LOC_NAME_CAP;
    n = capped(n, LOC_NAME_CAP);
    if (n && name[1] && bpf_probe_read_user(l->loc_name, n, (void *)name[1]) < 0)
        l->loc_name_len = 0;
}
#endif

/* r->upstream_states as nginx logs them ($upstream_addr, _status, _*_time: see struct
 * ev_upstate), the first UPSTATES_MAX into l->tail; returns how many. */
static __always_inline u32 read_states(struct ev_reqlog *l, u64 r)
{
    u64 states = 0, arr[2] = {};   /* ngx_array_t: elts, nelts */
    l->nstates = 0;
    if (bpf_probe_read_user(&states, sizeof(states), (void *)(r + OFF_R_UPSTREAM_STATES)) < 0)
        return 0;
    if (states && bpf_probe_read_user(arr, sizeof(arr), (void *)states) < 0)
        return 0;
    l->rflags |= REQLOGF_STATES;
    if (!states || !arr[0])
        return 0;   /* no upstream: nginx logs "-" */
    l->nstates = arr[1] > 0xFFFF ? 0xFFFF : (u32)arr[1];
    u32 n = 0;
#pragma unroll
    for (int i = 0; i < UPSTATES_MAX; i++) {
        if (i >= arr[1])
            break;
        struct ev_upstate *u = (struct ev_upstate *)(l->tail + i * sizeof(struct ev_upstate));
        u64 st[9] = {};   /* status, response/connect/header/queue_time, 3 counts, peer */
        if (bpf_probe_read_user(st, sizeof(st), (void *)(arr[0] + i * STATE_SIZE)) < 0)
            break;
        u->status = (u32)st[0];
        u->response_ms = (s64)st[1];
        u->connect_ms = (s64)st[2];
        u->header_ms = (s64)st[3];
        u->peer_len = UPSTATE_GROUP;
        u64 name[2] = {};   /* ngx_str_t: len, data */
        if (st[8] && bpf_probe_read_user(name, sizeof(name), (void *)st[8]) == 0) {
            u64 len = name[0] > 0xFFFF ? 0xFFFF : name[0];
            u->peer_len = (u32)len;
            if (len > UPSTATE_PEER_CAP)
                len = UPSTATE_PEER_CAP;
            len = capped(len, UPSTATE_PEER_CAP);
            if (len && name[1] && bpf_probe_read_user(u->peer, len, (void *)name[1]) < 0)
                u->peer_len = 0;
        } else if (st[8]) {
            u->peer_len = 0;
        }
        n = i + 1;
    }
    return n;
}

/* A process whose ngx_cached_time address user space has not written yet (a worker that
 * started a moment ago, followed with --binary before the /proc scan found it): derived from
 * where this probe hit, ngx_http_free_request's run-time address `ip` (its load bias is
 * page-aligned; ip may be one past the probed byte), and kept only when it reads a clock
 * within 2 s of the kernel's. Else $msec would come from the epoll_wait return's time. */
static __always_inline void learn_clock_at(struct loop_clock_t *lc, u64 ip)
{
#if defined(CACHED_TIME_LINK) && defined(FREE_REQUEST_LINK)
    if (lc->at || !WALL_NS_OFFSET || ip < FREE_REQUEST_LINK)
        return;
    struct loop_clock_t guess = {.at = ((ip - FREE_REQUEST_LINK) & ~0xfffULL) + CACHED_TIME_LINK};
    struct ngx_time_head t = {};
    if (!ngx_time_now(&guess, &t))
        return;
    s64 d = (s64)(t.sec * 1000000000ULL + t.msec * 1000000ULL) - (s64)(bpf_ktime_get_ns() + (u64)WALL_NS_OFFSET);
    if (d > -2000000000LL && d < 2000000000LL)
        lc->at = guess.at;
#endif
}

/* EV_REQ_LOG for request r on connection c (r->connection): what nginx logs for it (see
 * events.h), with the header `h` of the EV_REQ_DONE that follows it; ip: where the probe hit. */
static __always_inline void req_log(struct ev_header *h, u64 r, u64 c, u64 ip)
{
#if REQ_LOG
    u32 cpu = bpf_get_smp_processor_id();
    struct ev_reqlog *l = reqlog_scratch.lookup(&cpu);
    if (!l)
        return;
    l->h = *h;
    l->h.kind = EV_REQ_LOG;
    l->h.rid = (u32)r;   /* which request: its upstream events name the same (a subrequest's others) */
    l->request_length = 0;
    l->sent = 0;
    l->status = 0;
    l->err_status = 0;
    bpf_probe_read_user(&l->request_length, sizeof(l->request_length), (void *)(r + OFF_R_REQUEST_LENGTH));
    bpf_probe_read_user(&l->sent, sizeof(l->sent), (void *)(c + OFF_SENT));
    bpf_probe_read_user(&l->status, sizeof(l->status), (void *)(r + OFF_R_STATUS));
    bpf_probe_read_user(&l->err_status, sizeof(l->err_status), (void *)(r + OFF_R_ERR_STATUS));
    if (bpf_probe_read_user(l->strs, sizeof(l->strs), (void *)(r + OFF_R_REQUEST_LINE)) < 0)
        __builtin_memset(l->strs, 0, sizeof(l->strs));
    /* the client as nginx logs it: realip (X-Real-IP, X-Forwarded-For, PROXY protocol) swaps
     * c->sockaddr for the request, and restores it only when the request's pool is freed */
    u64 sa = 0;
    bpf_probe_read_user(&sa, sizeof(sa), (void *)(c + OFF_SOCKADDR));
    read_sockaddr(l->remote, &l->remote_len, sa, c + OFF_SOCKLEN);
    u64 addr = l->strs[1], n = l->strs[0];
    if (!addr || !n) {
        /* no request line stored (nginx rejected it): $request is what was read from its start */
        u64 buf = 0, last = 0;
        addr = 0;
        bpf_probe_read_user(&addr, sizeof(addr), (void *)(r + OFF_R_REQUEST_START));
        bpf_probe_read_user(&buf, sizeof(buf), (void *)(r + OFF_R_HEADER_IN));
        if (buf)
            bpf_probe_read_user(&last, sizeof(last), (void *)(buf + 8));   /* ngx_buf_t.last */
        n = addr && last > addr ? last - addr : 0;
    }
    l->line_addr = addr;
    loc_of(l, r);
    /* $msec and $request_time: nginx's clock read where its log handler reads it next, and
     * r->start_sec/start_msec (not the turn's copy in loop_clock, which is the epoll_wait
     * return's kernel time while the process's clock address is not known) */
    l->rflags = 0;
    struct loop_clock_t *lc = loop_clock.lookup(&l->h.pid);
    struct ngx_time_head t = {};
    if (lc)
        learn_clock_at(lc, ip);
    if (lc && ngx_time_now(lc, &t) &&
        bpf_probe_read_user(&l->start_sec, 2 * sizeof(u64), (void *)(r + OFF_R_START_SEC)) == 0) {
        l->now_sec = t.sec;
        l->now_msec = t.msec;
        l->rflags |= REQLOGF_CLOCK;
    }
    u64 off = read_states(l, r);
    if (off > UPSTATES_MAX)
        off = UPSTATES_MAX;
    off *= sizeof(struct ev_upstate);
    /* a unix listener's whole path ($server_addr): the connection's first sighting copied
     * only SOCKADDR_MAX bytes of it, and its socket may be gone before user space looks */
    u64 lsa = 0;
    u32 lsl = 0;
    u16 family = 0;
    bpf_probe_read_user(&lsa, sizeof(lsa), (void *)(c + OFF_LOCAL_SOCKADDR));
    bpf_probe_read_user(&lsl, sizeof(lsl), (void *)(c + OFF_LOCAL_SOCKLEN));
    if (lsa && lsl > SOCKADDR_MAX && bpf_probe_read_user(&family, sizeof(family), (void *)lsa) == 0 &&
        family == 1 /* AF_UNIX */) {
        u64 len = lsl > REQLOG_UNIX_CAP ? REQLOG_UNIX_CAP : lsl;
        len = capped(len, 128);
        if (len > REQLOG_UNIX_CAP)
            len = REQLOG_UNIX_CAP;
        __builtin_memset(l->tail + off, 0, REQLOG_UNIX_CAP);
        if (len && bpf_probe_read_user(l->tail + off, len, (void *)lsa) == 0) {
            l->rflags |= REQLOGF_UNIX;
            off += REQLOG_UNIX_CAP;
        }
    }
    if (n > REQLOG_LINE_CAP)
        n = REQLOG_LINE_CAP;
    n = capped(n, REQLOG_LINE_CAP);
    if (n && bpf_probe_read_user(l->tail + off, n, (void *)addr) < 0)
        n = 0;
    submit(l, __builtin_offsetof(struct ev_reqlog, tail) + off + n);
#endif
}
