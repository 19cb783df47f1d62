"""HTTP/1: requests framed from the bytes nginx read, responses delimited by nginx itself.

Requests are framed by decode.http1.RequestStream. nginx delimits responses itself:
EV_REQ_DONE fires when it frees (and logs) a request, with the connection's byte counters at
that moment, so everything written since the previous one is that request's response,
whatever its framing: sizes are exact even when payloads are cut, sent with sendfile, or
lost. A completion whose payload the kernel shed is counted from its summary. Captures
without completion markers (EVF_NOMARK: the libssl/syscall fallback) frame the responses
from the bytes written instead (decode.respframe), and each one found ends like EV_REQ_DONE
would. A "101 Switching Protocols" ends the exchange and turns the connection into a
WebSocket tunnel (Conn.ws, decode.handlers.websocket from then on).
"""

from __future__ import annotations

from ...capture.events import (
    EV_REQ_DONE,
    EV_SENDFILE,
    EVF_NOMARK,
    EVF_SAMPLED,
    EVF_SHED,
    EVF_STAGED,
    KEEP_NAMES,
    STAGE_CAP,
    RawEvent,
)
from ..connstate import Conn, Upgrade
from ..emitter import Emitter
from ..http1 import ParsedRequest, RequestStream, request_line_of
from ..respframe import ResponseFramer
from ..upstream import UpstreamTracker
from ..websocket import WsDirection, WsTunnel
from .base import ProtocolHandler
from .h1exchange import emit_h1, emit_summary

__all__ = ["STAGED_CUT", "Http1Handler"]

STAGED_CUT = f"payload kept in the kernel up to {STAGE_CAP} bytes each way (sampled out, kept at completion)"
"""Exchange.error of a row a keep rule held whose payload the kernel staged and cut (the
sizes stay exact; its upstream attempts were not followed while it was sampled out)."""


class Http1Handler(ProtocolHandler):
    """HTTP/1 on client connections: one exchange per request nginx finished."""

    __slots__ = ("attach_ts", "emit", "midway_window", "summary_fast_path", "upstreams")

    def __init__(self, emit: Emitter, upstreams: UpstreamTracker, *, attach_ts: float = 0.0,
                 midway_window: float = 2.0) -> None:
        self.emit = emit
        self.upstreams = upstreams
        """Where the upstream attempts of a finished request are taken from."""
        self.attach_ts = attach_ts
        self.midway_window = midway_window
        """A connection's first bytes read this soon after the attach may be mid-request."""
        self.summary_fast_path = True
        """Build summary-only exchanges directly (emit_summary); False: through emit_h1
        (tests compare the two)."""

    # -- bytes ------------------------------------------------------------------------------
    def on_recv(self, conn: Conn, ev: RawEvent) -> None:
        if ev.offset > conn.recv_off:
            self.emit.stats.gaps += 1
            conn.requests.feed(b"", ev.offset - conn.recv_off, ev.ts)
        if conn.recv_off == 0 and ev.offset == 0 and not conn.requests.done and conn.requests.current is None:
            conn.requests.allow_midway = ev.ts - self.attach_ts < self.midway_window
        conn.requests.feed(ev.data, ev.length, ev.ts, ev.clock)
        conn.recv_off = ev.offset + ev.length
        if ev.flags & EVF_STAGED and len(ev.data) < ev.length:
            conn.staged_cut = True

    def on_send(self, conn: Conn, ev: RawEvent) -> None:
        if (ev.offset == conn.done_send_off and ev.data.startswith((b"HTTP/1.1 101 ", b"HTTP/1.0 101 "))
                and ev.offset >= conn.send_off):
            self._upgrade(conn, ev)
            return
        if ev.offset > conn.send_off:
            self.emit.stats.gaps += 1
            conn.send_hole = True
            conn.segments.append((b"", ev.offset - conn.send_off))
        if not conn.send_first_ts:
            conn.send_first_ts = ev.ts
        conn.send_last_ts = ev.ts
        if ev.flags & EVF_STAGED and len(ev.data) < ev.length:
            conn.staged_cut = True
        if ev.kind == EV_SENDFILE:
            conn.sendfile_bytes += ev.length
            conn.segments.append((b"", ev.length))
        else:
            if len(ev.data) < ev.length:
                conn.send_hole = True
            room = self.emit.body_limit + 65536 - conn.captured
            data = ev.data[: max(0, room)]
            conn.captured += len(data)
            conn.segments.append((data, ev.length))
        conn.send_off = ev.offset + ev.length
        if ev.flags & EVF_NOMARK:
            self._frame(conn, ev)

    def _upgrade(self, conn: Conn, ev: RawEvent) -> None:
        """nginx wrote "101 Switching Protocols": what follows on the connection is a tunnel
        (decode.handlers.websocket), summarised when nginx finishes the request; the
        upgrade's exchange is handed out then too, its response counting the head and every
        byte relayed, as nginx's $bytes_sent does."""
        end = ev.data.find(b"\r\n\r\n")
        head = end + 4 if end >= 0 else ev.length
        req = conn.requests.take()
        if req is None:
            req = conn.requests.current or ParsedRequest(start_ts=ev.ts, error="request not captured")
        attempts = self.upstreams.take(conn.pid, conn.key[2])
        conn.upgrade = Upgrade(req, ev.data[:head], head, ev.offset, conn.send_first_ts or ev.ts, attempts)
        protocol = _upgrade_protocol(ev.data[:head])
        raw = protocol != "websocket"
        conn.ws = WsTunnel(0, f"{req.method} {req.target}".strip(), ev.ts, WsDirection(raw=raw), WsDirection(raw=raw),
                           protocol)
        conn.ws.outbound.feed(ev.data[head:], ev.length - head)
        conn.requests = RequestStream()
        conn.send_off = ev.offset + ev.length
        _reset_response(conn)

    # -- responses without completion markers (EVF_NOMARK: the libssl/syscall fallback) ----
    def _frame(self, conn: Conn, ev: RawEvent) -> None:
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
            self._framed_done(conn, ev, end, fr.uncertain)

    def frame_close(self, conn: Conn, ev: RawEvent) -> None:
        """EV_CLOSE without completion markers: a close-delimited response ends with its
        connection."""
        fr = conn.framer
        if fr is not None and fr.close_delimited and ev.aux > conn.done_send_off and conn.ws is None:
            self._framed_done(conn, ev, ev.aux, False)

    def _framed_done(self, conn: Conn, ev: RawEvent, end: int, uncertain: bool) -> None:
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
        self.on_done(conn, done)
        conn.send_off = max(conn.send_off, send_off)
        if uncertain:
            self.emit.stats.lost_responses += 1
        if tail:
            conn.segments = tail
            conn.captured = sum(len(d) for d, _ in tail)
            conn.send_first_ts = conn.send_last_ts = ev.ts

    # -- completions (EV_REQ_DONE) -----------------------------------------------------------
    def on_done(self, conn: Conn, ev: RawEvent) -> None:
        """nginx freed (and logged) a request. ev.offset and ev.aux are the connection's read
        and write counters then: the response is what nginx wrote since the previous
        completion."""
        conn.kept_by = kept_by(ev.keep) if ev.keep else None
        if ev.flags & EVF_SHED:
            self._on_shed_done(conn, ev)
            conn.kept_by = None
            return
        emit = self.emit
        if ev.offset > conn.recv_off:
            emit.stats.gaps += 1
            conn.requests.feed(b"", ev.offset - conn.recv_off, ev.ts)
            conn.recv_off = ev.offset
        error = None
        merged = False
        skipped = (ev.seq - conn.done_seq - 1) % 65536 if conn.done_seq or ev.seq != 1 else 0
        if skipped:
            # completions were lost: the requests they ended cannot be paired safely
            emit.stats.lost_responses += skipped
            for _ in range(skipped):
                lost = conn.requests.take()
                if lost is not None:
                    emit_h1(emit, conn, lost, None, ev.ts, error="response lost (capture overflow)")
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
            # begun but never whole (HTTP/0.9, a line nginx rejected): it began at its first byte
            cur = conn.requests.current
            req = ParsedRequest(start_ts=cur.start_ts if cur else (conn.send_first_ts or ev.ts),
                                start_clock=cur.start_clock if cur else 0.0, end_ts=ev.ts)
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
        # the request's own attempts, and its subrequests' (another request: not in its log line)
        attempts, subrequests = self.upstreams.take_request(conn.pid, conn.key[2], ev.log.rid if ev.log else 0)
        if conn.staged_cut and not error and not req.error:
            error = STAGED_CUT
        conn.staged_cut = False
        emit_h1(emit, conn, req, resp_len, ev.ts, error=error, end_clock=ev.clock, parse=not merged,
                upstream=attempts, kstatus=0 if merged else ev.status, ngx=None if merged else ev.log,
                subrequests=subrequests)
        conn.requests.settle()
        conn.kept_by = None
        _completed(conn, ev)

    def on_counted(self, conn: Conn, ev: RawEvent) -> None:
        """The kernel counted ev.length completions of sampled-out exchanges on this
        connection instead of sending them (EV_COUNTED, before the connection's next record):
        nothing of them reached us, so the next exchange starts at the counters they left."""
        conn.requests = RequestStream()
        conn.requests.uncertain = False
        conn.recv_off = max(conn.recv_off, ev.offset)
        if ev.aux > conn.send_off:
            conn.send_off = ev.aux
        conn.done_seq = ev.seq
        _completed(conn, ev)

    def _on_shed_done(self, conn: Conn, ev: RawEvent) -> None:
        """The kernel shed (some of) this exchange's payload: count it from its summary."""
        stats = self.emit.stats
        stats.shed += 1
        stream = conn.requests
        req = stream.done.pop(0) if stream.done else None
        # nothing of it captured (the usual exchange sampled out at saturation): built directly
        summary_only = self.summary_fast_path and req is None and not conn.segments
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
        attempts = [a for a in self.upstreams.take(conn.pid, conn.key[2]) if a.response_head is not None]
        # whatever was read is accounted for: the next request starts a fresh stream
        conn.requests = RequestStream()
        conn.requests.uncertain = False
        conn.recv_off = max(conn.recv_off, ev.offset)
        if ev.aux > conn.send_off:
            conn.send_off = ev.aux
        conn.done_seq = ev.seq
        resp_len = ev.aux - conn.done_send_off
        if ev.flags & EVF_SAMPLED:
            stats.sampled += 1
        if summary_only:
            emit_summary(self.emit, conn, ev, line, start, start_clock, request_bytes, resp_len, attempts)
        else:
            assert req is not None
            req.start_ts = start
            req.start_clock = start_clock
            req.end_ts = ev.ts
            req.error = None
            req.body_discarded = True
            req.head_bytes = request_bytes
            emit_h1(self.emit, conn, req, resp_len, ev.ts, end_clock=ev.clock, parse=False,
                    upstream=attempts, kstatus=ev.status, summary_only=True, ngx=ev.log)
        _completed(conn, ev)

    # -- the end -----------------------------------------------------------------------------
    def on_close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        """Requests still unanswered end with the connection (`why`); a response nginx wrote
        (`sent` past the last completion) whose completion was lost ends here too."""
        emit = self.emit
        if sent is not None and sent > conn.done_send_off:
            # nginx wrote a response whose completion event was lost
            req = conn.requests.take()
            if req is not None:
                if sent > conn.send_off:
                    conn.segments.append((b"", sent - conn.send_off))
                emit_h1(emit, conn, req, sent - conn.done_send_off, ts,
                        error="response end not seen (capture overflow)")
                conn.done_send_off = sent
        while True:
            req = conn.requests.take()
            if req is None:
                break
            if req.method or req.error:
                emit_h1(emit, conn, req, None, ts, error=why)
        cur = conn.requests.current
        if cur is not None and cur.method and not cur.answered:
            emit_h1(emit, conn, cur, None, ts, error=why)


def _upgrade_protocol(head: bytes) -> str:
    """The Upgrade header of a 101 response head, lower case ("" when none)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade":
            return value.strip().decode("latin-1").lower()
    return ""


def _reset_response(conn: Conn) -> None:
    """The next response starts empty (no bytes written for it yet)."""
    conn.segments = []
    conn.captured = 0
    conn.send_first_ts = conn.send_last_ts = 0.0
    conn.sendfile_bytes = 0
    conn.send_hole = False


def kept_by(keep: int) -> str:
    """The names of the KEEP_* rules in `keep` (Exchange.kept_by)."""
    return ",".join(name for bit, name in KEEP_NAMES.items() if keep & bit)


def _completed(conn: Conn, ev: RawEvent) -> None:
    """nginx finished a request (ev): the next response starts after its counters (and
    empty, as _reset_response: written out, this runs for every exchange)."""
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
