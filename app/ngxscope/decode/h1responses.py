"""HTTP/1 responses: where each one ends, and the exchange it closes.

nginx delimits responses itself: EV_REQ_DONE fires when it frees (and logs) a request, with
the connection's byte counters at that moment, so everything written since the previous one
is that request's response. The completion is dispatched from here to HTTP/2
(decode.h2streams) and to a WebSocket tunnel's end (decode.tunnels); a completion whose
payload the kernel shed is counted from its summary. Captures without completion markers
(EVF_NOMARK: the libssl/syscall fallback) frame the responses from the bytes written instead
(decode.respframe), and each one found ends like EV_REQ_DONE would.

Part of the Assembler (decode.assembler) split by topic: the functions take the Assembler
and work on its state, as methods would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..capture.events import (
    EV_REQ_DONE,
    EV_SENDFILE,
    EVF_H2STREAM,
    EVF_NOMARK,
    EVF_SAMPLED,
    EVF_SHED,
    RawEvent,
)
from .connstate import Conn
from .h1exchange import emit_h1, emit_summary
from .h2streams import on_h2_done
from .http1 import ParsedRequest, RequestStream, request_line_of
from .respframe import ResponseFramer
from .tunnels import ws_end

if TYPE_CHECKING:
    from .assembler import Assembler

__all__ = ["SUMMARY_FAST_PATH", "completed", "frame", "frame_close", "framed_done", "on_done", "on_shed_done"]

SUMMARY_FAST_PATH = True
"""Build summary-only exchanges directly (emit_summary); False: through emit_h1 (tests
compare the two)."""

_SAMPLED_NOTE = ("payload not captured (sampled out while the capture was over its CPU budget): "
                 "status, sizes and times from the kernel summary")


# -- responses without completion markers (EVF_NOMARK: the libssl/syscall fallback) ----
def frame(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
    """Frame responses from the bytes written; each one found ends like EV_REQ_DONE would."""
    fr = conn.framer
    if fr is None:
        fr = conn.framer = ResponseFramer(start=ev.offset)
    if ev.offset > fr.fed:
        fr.feed(b"", ev.offset - fr.fed)
    if ev.offset + ev.length > fr.fed:
        skip = fr.fed - ev.offset
        data = ev.data if ev.kind != EV_SENDFILE else b""
        fr.feed(data[skip:], ev.length - skip)
    while True:
        rs = conn.requests
        method = rs.done[0].method if rs.done else (rs.current.method if rs.current else "")
        end = fr.next_end(method)
        if end is None:
            return
        framed_done(asm, conn, ev, end, fr.uncertain)


def frame_close(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
    """A close-delimited response ends with its connection."""
    fr = conn.framer
    if fr is not None and fr.close_delimited and ev.aux > conn.done_send_off and conn.ws is None:
        framed_done(asm, conn, ev, ev.aux, False)


def framed_done(asm: Assembler, conn: Conn, ev: RawEvent, end: int, uncertain: bool) -> None:
    """A response framed from the bytes ends at stream offset `end`: complete it as the
    EV_REQ_DONE nginx would have sent."""
    if end <= conn.done_send_off or conn.h2 is not None or conn.ws is not None:
        return
    # bytes written past this response's end belong to the next one
    tail: list[tuple[bytes, int]] = []
    extra = conn.send_off - end
    while extra > 0 and conn.segments:
        data, length = conn.segments.pop()
        if length <= extra:
            tail.insert(0, (data, length))
            extra -= length
            continue
        keep = length - extra
        conn.segments.append((data[:keep], keep))
        tail.insert(0, (data[keep:], extra))
        extra = 0
    done = RawEvent(EV_REQ_DONE, ev.ts, conn.pid, conn.fd, conn.key[2], conn.recv_off, end, 0,
                    ev.flags & ~EVF_NOMARK, ev.clock, (conn.done_seq + 1) % 65536)
    # no marker says whether nginx used the body (proxied) or discarded it: count it
    conn.proxied = True
    send_off = conn.send_off
    on_done(asm, conn, done)
    conn.send_off = max(conn.send_off, send_off)
    if uncertain:
        asm.stats.lost_responses += 1
    if tail:
        conn.segments = tail
        conn.captured = sum(len(d) for d, _ in tail)
        conn.send_first_ts = conn.send_last_ts = ev.ts


# -- completions (EV_REQ_DONE) -------------------------------------------------------------
def on_done(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
    """nginx freed (and logged) a request (for HTTP/2, one stream's: see on_h2_done).
    ev.offset and ev.aux are the connection's read and write counters then: the response is
    what nginx wrote since the previous completion."""
    if not conn.client:
        return
    if ev.flags & EVF_H2STREAM:
        on_h2_done(asm, conn, ev)
        return
    if conn.ws is not None:
        ws_end(asm, conn, ev.ts, "closed (request finished)")
        asm.upstreams.take(conn.pid, conn.key[2])
        conn.done_seq = ev.seq
        conn.done_recv_off = ev.offset
        conn.recv_off = max(conn.recv_off, ev.offset)
        conn.done_send_off = conn.send_off = max(conn.send_off, ev.aux)
        conn.last_done_ts = ev.ts
        conn.last_done_clock = ev.clock
        conn.proxied = False
        return
    if ev.flags & EVF_SHED:
        on_shed_done(asm, conn, ev)
        return
    if ev.offset > conn.recv_off:
        asm.stats.gaps += 1
        conn.requests.feed(b"", ev.offset - conn.recv_off, ev.ts)
        conn.recv_off = ev.offset
    error = None
    merged = False
    skipped = (ev.seq - conn.done_seq - 1) % 65536 if conn.done_seq or ev.seq != 1 else 0
    if skipped:
        # completions were lost: the requests they ended cannot be paired safely
        asm.stats.lost_responses += skipped
        for _ in range(skipped):
            lost = conn.requests.take()
            if lost is not None:
                emit_h1(asm, conn, lost, None, ev.ts, error="response lost (capture overflow)")
        error = "response boundary uncertain (capture overflow)"
        merged = True  # the bytes since the last completion hold several responses
    conn.done_seq = ev.seq
    if ev.aux > conn.send_off:
        conn.send_hole = True
        conn.segments.append((b"", ev.aux - conn.send_off))
        conn.send_off = ev.aux
    req = conn.requests.take()
    resp_len = ev.aux - conn.done_send_off
    if req is None:
        raw = conn.requests.pending_raw()
        req = ParsedRequest(start_ts=conn.send_first_ts or ev.ts, end_ts=ev.ts)
        if conn.requests.joined_midway:
            req.error = "joined mid-connection: request not seen"
        elif raw:
            req.error = "malformed request"
            req.raw = raw[:4096]
            req.head_bytes = len(raw)
        else:
            # lost whole: nginx's read counter still says how big it was
            req.error = "request not captured"
            req.head_bytes = max(0, ev.offset - conn.done_recv_off)
    if req.body_size and not conn.proxied:
        # nginx discards bodies it does not use and leaves them out of $request_length
        req.body_discarded = True
    attempts = asm.upstreams.take(conn.pid, conn.key[2])
    emit_h1(asm, conn, req, resp_len, ev.ts, error=error, end_clock=ev.clock, parse=not merged,
            upstream=attempts, kstatus=0 if merged else ev.status)
    conn.requests.settle()
    completed(conn, ev)


def completed(conn: Conn, ev: RawEvent) -> None:
    """nginx finished a request (ev): the next response starts after its counters."""
    conn.done_recv_off = ev.offset
    conn.proxied = False
    conn.done_send_off = ev.aux
    conn.last_done_ts = ev.ts
    conn.last_done_clock = ev.clock
    conn.segments = []
    conn.captured = 0
    conn.send_first_ts = conn.send_last_ts = 0.0
    conn.sendfile_bytes = 0
    conn.send_hole = False


def on_shed_done(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
    """The kernel shed (some of) this exchange's payload: count it from its summary."""
    asm.stats.shed += 1
    stream = conn.requests
    req = stream.done.pop(0) if stream.done else None
    # nothing of it captured (the usual exchange sampled out at saturation): built directly
    summary_only = SUMMARY_FAST_PATH and req is None and not conn.segments
    line = ("", "", "")
    if summary_only:
        if ev.data:
            line = request_line_of(ev.data)
    elif req is None or not req.method or req.error:
        req = ParsedRequest(start_ts=0.0)
        if ev.data:
            req.method, req.target, req.version = request_line_of(ev.data)
    start = ev.ts - ev.span if ev.span >= 0 else (conn.last_done_ts or ev.ts)
    if ev.clock_span >= 0 and ev.clock:
        start_clock = ev.clock - ev.clock_span
    else:
        start_clock = conn.last_done_clock  # pipelined: it began when the previous ended
    # request_bytes: nginx's own read counter
    request_bytes = max(0, ev.offset - conn.done_recv_off)
    # attempts whose bytes were shed are guesses (a peer that "answered nothing"): only
    # those with the peer's response head seen are kept
    attempts = [a for a in asm.upstreams.take(conn.pid, conn.key[2]) if a.response_head is not None]
    # whatever was read is accounted for: the next request starts a fresh stream
    conn.requests = RequestStream()
    conn.requests.uncertain = False
    conn.recv_off = max(conn.recv_off, ev.offset)
    if ev.aux > conn.send_off:
        conn.send_off = ev.aux
    conn.done_seq = ev.seq
    resp_len = ev.aux - conn.done_send_off
    if ev.flags & EVF_SAMPLED:
        asm.stats.sampled += 1
    why = (_SAMPLED_NOTE if ev.flags & EVF_SAMPLED else
           "payload shed (capture overload): status, sizes and times from the kernel summary")
    if summary_only:
        emit_summary(asm, conn, ev, line, start, start_clock, request_bytes, resp_len, why, attempts)
    else:
        assert req is not None
        req.start_ts = start
        req.start_clock = start_clock
        req.end_ts = ev.ts
        req.error = None
        req.body_discarded = True
        req.head_bytes = request_bytes
        emit_h1(asm, conn, req, resp_len, ev.ts, error=why, end_clock=ev.clock, parse=False,
                upstream=attempts, kstatus=ev.status)
    completed(conn, ev)
