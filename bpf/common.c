/* The part of both capture programs that is the same (bpf/capture.c: nginx uprobes;
 * bpf/fallback.c: libssl uprobes + syscalls): the ring buffer and its accounting, the
 * target set, nginx's cached clock per process, and the event header. capture/tracer.py
 * puts this text before the program's (bcc rewrites map calls only in the program text). */
#include <uapi/linux/ptrace.h>
#include "events.h"

#define MAX_SEGS 16
#define MAX_CHUNKS 8   /* records per single-buffer call */
#define SCRATCH_DATA (2 * PAYLOAD_CAP)   /* room for the verifier's view of masked offsets */
/* Hide a value from the compiler so the masks below survive into the verifier's view. */
#define opaque(x) asm volatile("" : "+r"(x))

/* n (at most cap, a power of two) in a form the verifier can bound as a read length: hidden
 * from the compiler, then masked and clamped (the mask is what the verifier tracks). */
static __always_inline u64 capped(u64 n, u64 cap)
{
    opaque(n);
    n &= (2 * cap - 1);
    if (n > cap)
        n = cap;
    return n;
}

/* counters' and rbstate's indices (CNT_*, RB_*) are in events.h: user space reads them */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(targets, u32, u8, 4096);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
BPF_ARRAY(enabled, u32, 1);   /* set once every probe is attached: no half-seen exchanges */
BPF_ARRAY(rbstate, u64, 2);
/* Per process: nginx's cached clock (what $msec and $request_time use). nginx updates it
 * once per event-loop turn, right after epoll_wait returns; the probes read it in nginx's
 * memory through its `ngx_cached_time` pointer once per turn, at the first event that needs
 * it (after nginx's update). Without the pointer's address the kernel time of the
 * epoll_wait return stands in (it trails nginx's clock when the worker is preempted
 * between the two). */
struct loop_clock_t {
    u64 epoll_ns;    /* ktime of the last epoll_wait return (0: not kept, nginx's clock is read) */
    u64 ngx_clock;   /* nginx's clock this turn as ktime (0: not read yet this turn) */
    u64 at;          /* run-time address of ngx_cached_time (0: unknown; capture/nginxclock.py) */
    u64 at_ok;       /* nginx's clock was last read at `at`: the epoll_wait return's time is not
                      * needed (0 in a new process: `at` may be its parent's, before an exec) */
};
BPF_HASH(loop_clock, u32, struct loop_clock_t, 4096);

#ifndef WALL_NS_OFFSET
#define WALL_NS_OFFSET 0   /* Unix ns minus ktime ns, as user space converts times back */
#endif

struct ngx_time_head {   /* the start of nginx's ngx_time_t */
    u64 sec;
    u64 msec;
};

/* nginx's clock now, read in its memory (*ngx_cached_time); 0 when unknown. */
static __always_inline int ngx_time_now(struct loop_clock_t *lc, struct ngx_time_head *t)
{
    u64 p = 0;
    return lc->at && bpf_probe_read_user(&p, sizeof(p), (void *)lc->at) == 0 && p &&
           bpf_probe_read_user(t, sizeof(*t), (void *)p) == 0 && t->msec < 1000;
}

static __always_inline u64 process_clock(u32 tgid)
{
    struct loop_clock_t *lc = loop_clock.lookup(&tgid);
    if (!lc)
        return 0;
    if (lc->ngx_clock)
        return lc->ngx_clock;
    struct ngx_time_head t = {};
    if (WALL_NS_OFFSET && ngx_time_now(lc, &t)) {
        u64 unix_ns = t.sec * 1000000000ULL + t.msec * 1000000ULL;
        if (unix_ns > (u64)WALL_NS_OFFSET) {
            lc->ngx_clock = unix_ns - (u64)WALL_NS_OFFSET;
            lc->at_ok = 1;
            return lc->ngx_clock;
        }
    }
    lc->at_ok = 0;
    /* no epoll_wait time kept this turn (nginx's clock had been read before): now stands in */
    return lc->epoll_ns ? lc->epoll_ns : bpf_ktime_get_ns();
}

static __always_inline void count(int idx, u64 n)
{
    u64 *v = counters.lookup(&idx);
    if (v)
        *v += n;
}

static __always_inline int is_target(u32 tgid)
{
    if (targets.lookup(&tgid))
        return 1;
#if FOLLOW_ALL
    int zero = 0;
    u32 *on = enabled.lookup(&zero);
    if (!on || !*on)
        return 0;
    u8 one = 1;
    targets.update(&tgid, &one);
    struct loop_clock_t fresh = {};   /* every target has one (processes.c epoll_wait) */
    loop_clock.insert(&tgid, &fresh);
    return 1;
#else
    return 0;
#endif
}

/* The header with nginx's clock given (0: not read yet; a record that may never be sent
 * need not pay for the lookup). */
static __always_inline void fill_header_clock(struct ev_header *h, u8 kind, u64 ts, u64 pid_tgid, s32 fd,
                                              u64 clock)
{
    h->ts = ts;
    h->conn_ts = 0;
    h->offset = 0;   /* each union slot zeroed once, by its first member's name */
    h->owner = 0;
    u32 tgid = pid_tgid >> 32;
    h->clock = clock;
    h->pid = tgid;
    h->tid = (u32)pid_tgid;
    h->fd = fd;
    h->len = 0;
    h->cap = 0;
    h->kind = kind;
    h->flags = 0;
    h->seq = 0;
}

static __always_inline void fill_header(struct ev_header *h, u8 kind, u64 ts, u64 pid_tgid, s32 fd)
{
    fill_header_clock(h, kind, ts, pid_tgid, fd, process_clock(pid_tgid >> 32));
}

/* Returns 1 when the record is in the ring buffer, 0 when it was lost (counted). */
static __always_inline int submit(void *rec, u32 size)
{
    if (events.ringbuf_output(rec, size, BPF_RB_NO_WAKEUP) < 0) {
        count(CNT_LOST, 1);
        return 0;
    }
    count(CNT_EVENTS, 1);
    int idx = RB_PRODUCED;
    u64 *p = rbstate.lookup(&idx);
    if (p)
        __sync_fetch_and_add(p, (u64)((size + 8 + 7) & ~7));
    return 1;
}

/* A payload record: the header, then up to PAYLOAD_CAP bytes (per-CPU scratch, not stack). */
struct data_event {
    struct ev_header h;
    __u8 data[SCRATCH_DATA];
};

/* "HTTP/1.x NNN" at the start of a response: NNN, or 0 (1xx interim responses too). */
static __always_inline u16 status_of(const u8 *b)
{
    if (b[0] != 'H' || b[1] != 'T' || b[2] != 'T' || b[3] != 'P' || b[4] != '/' || b[8] != ' ')
        return 0;
    u8 d0 = b[9] - '0', d1 = b[10] - '0', d2 = b[11] - '0';
    if (d0 > 9 || d1 > 9 || d2 > 9)
        return 0;
    u16 code = d0 * 100 + d1 * 10 + d2;
    if (code >= 100 && code < 200 && code != 101)
        return 0;
    return code;
}

/* One buffer of `ret` bytes at user address `buf`: up to MAX_CHUNKS records of PAYLOAD_CAP
 * each, from stream offset e->h.offset with flags e->h.flags, the last record counting the
 * rest (truncated). `status`, when not null, is set from the first record's bytes. */
static __always_inline void emit_chunks(struct data_event *e, u64 buf, u64 ret, u16 *status)
{
    u64 base = e->h.offset;
    u8 flags0 = e->h.flags;
    u64 done = 0;
#pragma unroll
    for (int i = 0; i < MAX_CHUNKS; i++) {
        if (done >= ret)
            break;
        u64 left = ret - done;
        u64 n = left < PAYLOAD_CAP ? left : PAYLOAD_CAP;
        n = capped(n, PAYLOAD_CAP);
        u64 len = (i == MAX_CHUNKS - 1) ? left : n;
        bpf_probe_read_user(&e->data[0], n, (void *)(buf + done));
        e->h.offset = base + done;
        e->h.len = len;
        e->h.cap = n;
        e->h.flags = flags0;
        if (i == 0 && status && n >= 12)
            *status = status_of(e->data);
        if (n < len) {
            e->h.flags |= EVF_TRUNCATED;
            count(CNT_TRUNCATED, 1);
        }
        submit(e, sizeof(struct ev_header) + n);
        done += len;
    }
}
