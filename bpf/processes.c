/* The process tracepoints both capture programs share; capture/tracer.py puts this text
 * after the program's. HAVE_CURRENT_REQ: the program keeps current_req per process. */

/* nginx caches the time once per event-loop turn, right after epoll_wait returns; its
 * $request_time and $msec use that clock. Keep it per process so events can carry it.
 * loop_clock has an entry for every target and for nothing else (made with the target: by
 * user space, at a fork, by is_target; gone with it): one lookup tells both, as the targets
 * lookup alone did for every other process of the machine. Once nginx's clock has been read
 * in its memory, the kernel time is not needed here: ~110 ns less per turn of a worker's
 * loop. */
TRACEPOINT_PROBE(syscalls, sys_exit_epoll_wait)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct loop_clock_t *lc = loop_clock.lookup(&tgid);
    if (!lc)
        return 0;
    lc->epoll_ns = lc->at_ok ? 0 : bpf_ktime_get_ns();
    lc->ngx_clock = 0;   /* nginx is about to update its clock: read it again */
    return 0;
}

/* A new process forked from a captured one (a worker started by the master). */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = args->parent_pid;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    targets.update(&child, &one);
    struct loop_clock_t *lc = loop_clock.lookup(&tgid);   /* a fork maps the binary where its parent did */
    struct loop_clock_t fresh = {.at = lc ? lc->at : 0};
    loop_clock.update(&child, &fresh);
    struct ev_header h = {};
    fill_header(&h, EV_FORK, bpf_ktime_get_ns(), bpf_get_current_pid_tgid(), -1);
    h.child = child;
    h.parent = parent;
    submit(&h, sizeof(h));
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
#ifdef HAVE_CALL_SLOTS
    /* the thread's call slots (bpf/capture.c: they outlive each call); a thread of a
     * captured process may exit after its process left `targets`, so every thread asks */
#pragma unroll
    for (int fn = F_RECV; fn <= F_SENDFILE; fn++) {
        u64 key = pid_tgid ^ ((u64)fn << 56);
        calls.delete(&key);
    }
#endif
    if ((u32)pid_tgid != tgid || !targets.lookup(&tgid))
        return 0;
    struct ev_header h = {};
    fill_header(&h, EV_EXIT, bpf_ktime_get_ns(), pid_tgid, -1);
    submit(&h, sizeof(h));
    targets.delete(&tgid);
    loop_clock.delete(&tgid);
#ifdef HAVE_CURRENT_REQ
    current_req.delete(&tgid);
#endif
    return 0;
}
