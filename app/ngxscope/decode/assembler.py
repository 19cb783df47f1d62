"""Turn the capture's raw events into HTTP exchanges, per connection.

Requests are framed from the bytes nginx read (decode.http1.RequestStream). Responses are
delimited by nginx itself: the EV_REQ_DONE event fires when nginx frees (and logs) a
request, carrying the connection's byte counters at that moment. Everything nginx wrote on
the connection since the previous EV_REQ_DONE is that request's response, whatever its
framing, so sizes are exact even when payloads are cut, sent with sendfile, or lost.
Stream offsets in every event reveal lost events; the affected exchanges are flagged.

HTTP/2 connections (the connection preface at the start of what nginx read) are decoded by
decode.http2 instead: one exchange per stream, cut where nginx frees the stream's request
(EV_REQ_DONE with EVF_H2STREAM, which carries the stream's own $bytes_sent).

Connections of nginx's stream module (TCP proxy, EV_STREAM_START) are never parsed as HTTP:
decode.tcpstream keeps their bytes and makes one record per session at EV_STREAM_DONE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..capture.events import (
    EV_CLOSE,
    EV_CONNECT,
    EV_CONNECTED,
    EV_EXIT,
    EV_FORK,
    EV_OPEN,
    EV_RECV,
    EV_REQ_DONE,
    EV_SEND,
    EV_SENDFILE,
    EV_STREAM_DONE,
    EV_STREAM_START,
    EV_UPSTREAM,
    EVF_CLIENT,
    EVF_H2STREAM,
    EVF_NOMARK,
    EVF_SAMPLED,
    EVF_SHED,
    EVF_TLS,
    RawEvent,
    nginx_msec,
)
from ..model import Exchange, LifecycleEvent, UpstreamAttempt
from .http1 import ParsedRequest, ParsedResponse, RequestStream, parse_response, request_line_of
from .http2 import PREFACE, H2Connection, H2Stream, grpc_summary
from .respframe import ResponseFramer
from .tcpstream import TcpSession, tcp_exchange
from .upstream import UpstreamTracker
from .websocket import WsDirection, WsTunnel

__all__ = ["Assembler", "AssemblerStats"]

log = logging.getLogger(__name__)

_SAMPLED_NOTE = ("payload not captured (sampled out while the capture was over its CPU budget): "
                 "status, sizes and times from the kernel summary")

ConnKey = tuple[int, int, int]


@dataclass(slots=True)
class AssemblerStats:
    """What the decoder has seen (shown in the status line and the session's stats)."""

    events: int = 0
    exchanges: int = 0
    malformed: int = 0
    gaps: int = 0
    """Holes found in byte streams (lost ring-buffer events)."""
    lost_responses: int = 0
    """Request completions that never arrived (lost events); their exchanges are flagged."""
    open_conns: int = 0
    shed: int = 0
    """Exchanges whose payload the kernel shed (pressure or sampling): counted from its summary."""
    sampled: int = 0
    """Of :attr:`shed`, those sampled out on purpose (the capture was over its CPU budget)."""


@dataclass(slots=True)
class _Conn:
    key: ConnKey
    pid: int
    fd: int
    client: bool
    tls: bool
    opened: float
    peer: str = ""
    local: str = ""
    requests: RequestStream = field(default_factory=RequestStream)
    recv_off: int = 0
    send_off: int = 0
    done_send_off: int = 0
    done_seq: int = 0
    seq: int = 0
    last_done_ts: float = 0.0
    last_done_clock: float = 0.0
    done_recv_off: int = 0
    segments: list[tuple[bytes, int]] = field(default_factory=list)
    captured: int = 0
    send_first_ts: float = 0.0
    send_last_ts: float = 0.0
    sendfile_bytes: int = 0
    send_hole: bool = False
    proxied: bool = False
    """nginx handed the current request to an upstream (so it read the request body)."""
    h2: H2Connection | None = None
    """The HTTP/2 decoder, for an HTTP/2 connection."""
    ws: WsTunnel | None = None
    """The connection was upgraded (101): nginx relays WebSocket frames."""
    framer: ResponseFramer | None = None
    """EVF_NOMARK connections (no completion markers): responses framed from HTTP/1."""
    tcp: TcpSession | None = None
    """A stream-module (TCP proxy) session runs on this connection: bytes are not HTTP."""


class Assembler:
    """Feed RawEvents in ring-buffer order; exchanges come out through `on_exchange`."""

    def __init__(
        self,
        on_exchange: Callable[[Exchange], None],
        on_event: Callable[[LifecycleEvent], None] | None = None,
        *,
        body_limit: int = 256 * 1024,
        attach_ts: float = 0.0,
        midway_window: float = 2.0,
        peer_of: Callable[[int, int], str] | None = None,
    ) -> None:
        self.on_exchange = on_exchange
        self.on_event = on_event
        self.body_limit = body_limit
        self.attach_ts = attach_ts
        self.midway_window = midway_window
        self.stats = AssemblerStats()
        self._conns: dict[ConnKey, _Conn] = {}
        self._by_fd: dict[tuple[int, int], ConnKey] = {}
        self._connects: dict[tuple[int, int], str] = {}
        self.upstreams = UpstreamTracker()
        self.peer_of = peer_of
        """Looks up the peer of an upstream connection whose connect(2) came before the capture."""
        self._next_id = 1

    # -- entry point ----------------------------------------------------------------------
    def feed(self, ev: RawEvent) -> None:
        self.stats.events += 1
        kind = ev.kind
        if kind in (EV_RECV, EV_SEND, EV_SENDFILE):
            conn = self._conn_for(ev)
            if kind == EV_RECV:
                self._on_recv(conn, ev)
            else:
                self._on_send(conn, ev)
        elif kind == EV_REQ_DONE:
            if ev.conn_ts:
                self._on_done(self._conn_for(ev), ev)
        elif kind == EV_UPSTREAM:
            if ev.conn_ts:
                conn = self._conn_for(ev)
                conn.proxied = True
                if ev.flags & EVF_H2STREAM and conn.h2 is not None:
                    conn.h2.mark_proxied()
        elif kind == EV_OPEN:
            self._open(ev)
        elif kind in (EV_STREAM_START, EV_STREAM_DONE):
            if ev.conn_ts:
                self._tcp_event(self._conn_for(ev), ev)
        elif kind == EV_CLOSE:
            conn_or_none = self._conns.get(ev.conn_key)
            if conn_or_none is not None:
                if not conn_or_none.client:
                    self.upstreams.closing(ev)
                if ev.flags & EVF_NOMARK:
                    self._frame_close(conn_or_none, ev)
                self._close(conn_or_none, ev.ts, "connection closed before response", sent=ev.aux)
        elif kind == EV_CONNECT:
            self._connects[(ev.pid, ev.fd)] = ev.peer
            self.upstreams.on_connect(ev)
        elif kind == EV_CONNECTED:
            self.upstreams.on_connected(ev)
        elif kind == EV_FORK:
            self._lifecycle(ev.ts, "worker-start", int(ev.aux), f"forked by {ev.pid}")
        elif kind == EV_EXIT:
            self._lifecycle(ev.ts, "worker-exit", ev.pid, "process exited")
            for key in [k for k in self._conns if k[0] == ev.pid]:
                self._close(self._conns[key], ev.ts, "worker exited before response")

    def finish(self, ts: float) -> None:
        """The capture ended: flush every connection's unanswered requests."""
        for conn in list(self._conns.values()):
            self._close(conn, ts, "capture ended before response")

    # -- connections ----------------------------------------------------------------------
    def _open(self, ev: RawEvent) -> _Conn:
        old = self._by_fd.get((ev.pid, ev.fd))
        if old is not None and old != ev.conn_key and old in self._conns:
            # the close of the previous connection on this fd was lost
            self._close(self._conns[old], ev.ts, "connection replaced before response")
        conn = self._conns.get(ev.conn_key)
        if conn is None:
            client = bool(ev.flags & EVF_CLIENT)
            conn = _Conn(
                key=ev.conn_key,
                pid=ev.pid,
                fd=ev.fd,
                client=client,
                tls=bool(ev.flags & EVF_TLS),
                opened=ev.ts,
            )
            self._conns[ev.conn_key] = conn
            self._by_fd[(ev.pid, ev.fd)] = ev.conn_key
            self.stats.open_conns = len(self._conns)
        if ev.kind == EV_OPEN:
            conn.peer = ev.peer
            conn.local = ev.local
            if not conn.client:
                conn.peer = self._connects.pop((ev.pid, ev.fd), conn.peer)
        if not conn.client and ev.kind == EV_OPEN:
            if not conn.peer and self.peer_of is not None and (ev.pid, ev.fd) not in self.upstreams.pending:
                conn.peer = self.peer_of(ev.pid, ev.fd)
            self.upstreams.on_open(ev, conn.peer)
        return conn

    def _conn_for(self, ev: RawEvent) -> _Conn:
        conn = self._conns.get(ev.conn_key)
        if conn is not None:
            if ev.flags & EVF_TLS and not conn.tls:
                conn.tls = True   # announced at accept time, before nginx's TLS handshake
            return conn
        conn = self._open(ev)  # its EV_OPEN was lost (ring buffer full)
        if conn.client and self.peer_of is not None and ev.flags & EVF_NOMARK:
            # the fallback capture never re-sends it: the socket is still open, most likely
            # (the nginx-uprobe capture re-sends EV_OPEN with the connection's next event, so
            # nothing is guessed there: by the time this runs the fd may be another client's)
            conn.peer = self.peer_of(ev.pid, ev.fd)
        return conn

    def _close(self, conn: _Conn, ts: float, why: str, sent: int | None = None) -> None:
        if conn.tcp is not None:
            self._tcp_emit(conn, None, ts, why.replace(" before response", ""))
        if conn.ws is not None:
            self._ws_end(conn, ts, f"ended ({why.replace(' before response', '')})")
        if conn.client and conn.h2 is not None:
            for st in conn.h2.leftovers():
                if st.request_headers or st.error:
                    self._emit_h2(conn, st, None, ts, 0.0, f"stream not finished by nginx: {why}")
        elif conn.client:
            if sent is not None and sent > conn.done_send_off:
                # nginx wrote a response whose completion event was lost
                req = conn.requests.take()
                if req is not None:
                    if sent > conn.send_off:
                        conn.segments.append((b"", sent - conn.send_off))
                    self._emit(conn, req, sent - conn.done_send_off, ts,
                               error="response end not seen (capture overflow)")
                    conn.done_send_off = sent
            while True:
                req = conn.requests.take()
                if req is None:
                    break
                if req.method or req.error:
                    self._emit(conn, req, None, ts, error=why)
            cur = conn.requests.current
            if cur is not None and cur.method and not cur.answered:
                self._emit(conn, cur, None, ts, error=why)
        if conn.client:
            self.upstreams.drop_client(conn.pid, conn.key[2])
        else:
            self.upstreams.on_close(conn.key)
        self._conns.pop(conn.key, None)
        if self._by_fd.get((conn.pid, conn.fd)) == conn.key:
            del self._by_fd[(conn.pid, conn.fd)]
        self.stats.open_conns = len(self._conns)

    # -- bytes ------------------------------------------------------------------------------
    def _on_recv(self, conn: _Conn, ev: RawEvent) -> None:
        if conn.tcp is not None:
            conn.tcp.feed(ev, True, conn.recv_off, self.body_limit)
            conn.recv_off = ev.offset + ev.length
            return
        if not conn.client:
            conn.recv_off = ev.offset + ev.length
            self.upstreams.on_data(ev, sending=False)
            return
        if conn.h2 is None and ev.offset == 0 and conn.recv_off == 0 and ev.data[:14] == PREFACE[:14]:
            conn.h2 = H2Connection(body_limit=self.body_limit)
        if conn.h2 is not None:
            if ev.offset > conn.recv_off:
                self.stats.gaps += 1
                conn.h2.feed_in(b"", ev.offset - conn.recv_off, ev.ts, ev.clock)
            conn.h2.feed_in(ev.data, ev.length, ev.ts, ev.clock)
            conn.recv_off = ev.offset + ev.length
            return
        if conn.ws is not None:
            conn.ws.inbound.feed(ev.data, ev.length + max(0, ev.offset - conn.recv_off))
            conn.recv_off = ev.offset + ev.length
            return
        if ev.offset > conn.recv_off:
            self.stats.gaps += 1
            conn.requests.feed(b"", ev.offset - conn.recv_off, ev.ts)
        if conn.recv_off == 0 and ev.offset == 0 and not conn.requests.done and conn.requests.current is None:
            conn.requests.allow_midway = ev.ts - self.attach_ts < self.midway_window
        conn.requests.feed(ev.data, ev.length, ev.ts, ev.clock)
        conn.recv_off = ev.offset + ev.length

    def _on_send(self, conn: _Conn, ev: RawEvent) -> None:
        if conn.tcp is not None:
            conn.tcp.feed(ev, False, conn.send_off, self.body_limit)
            conn.send_off = ev.offset + ev.length
            return
        if not conn.client:
            conn.send_off = ev.offset + ev.length
            self.upstreams.on_data(ev, sending=True)
            return
        if conn.h2 is not None:
            if ev.offset > conn.send_off:
                self.stats.gaps += 1
                conn.h2.feed_out(b"", ev.offset - conn.send_off, ev.ts)
            conn.h2.feed_out(ev.data if ev.kind != EV_SENDFILE else b"", ev.length, ev.ts)
            conn.send_off = ev.offset + ev.length
            return
        if conn.ws is not None:
            if ev.offset > conn.send_off:
                conn.ws.outbound.feed(b"", ev.offset - conn.send_off)
            conn.ws.outbound.feed(ev.data if ev.kind != EV_SENDFILE else b"", ev.length)
            conn.send_off = ev.offset + ev.length
            return
        if (ev.offset == conn.done_send_off and ev.data.startswith((b"HTTP/1.1 101 ", b"HTTP/1.0 101 "))
                and ev.offset >= conn.send_off):
            self._upgrade(conn, ev)
            return
        if ev.offset > conn.send_off:
            self.stats.gaps += 1
            conn.send_hole = True
            conn.segments.append((b"", ev.offset - conn.send_off))
        if not conn.send_first_ts:
            conn.send_first_ts = ev.ts
        conn.send_last_ts = ev.ts
        if ev.kind == EV_SENDFILE:
            conn.sendfile_bytes += ev.length
            conn.segments.append((b"", ev.length))
        else:
            if len(ev.data) < ev.length:
                conn.send_hole = True
            room = self.body_limit + 65536 - conn.captured
            data = ev.data[: max(0, room)]
            conn.captured += len(data)
            conn.segments.append((data, ev.length))
        conn.send_off = ev.offset + ev.length
        if ev.flags & EVF_NOMARK:
            self._frame(conn, ev)

    # -- responses without completion markers (EVF_NOMARK: the libssl/syscall fallback) ----
    def _frame(self, conn: _Conn, ev: RawEvent) -> None:
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

    def _frame_close(self, conn: _Conn, ev: RawEvent) -> None:
        """A close-delimited response ends with its connection."""
        fr = conn.framer
        if fr is not None and fr.close_delimited and ev.aux > conn.done_send_off and conn.ws is None:
            self._framed_done(conn, ev, ev.aux, False)

    def _framed_done(self, conn: _Conn, ev: RawEvent, end: int, uncertain: bool) -> None:
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
        self._on_done(conn, done)
        conn.send_off = max(conn.send_off, send_off)
        if uncertain:
            self.stats.lost_responses += 1
        if tail:
            conn.segments = tail
            conn.captured = sum(len(d) for d, _ in tail)
            conn.send_first_ts = conn.send_last_ts = ev.ts

    def _on_done(self, conn: _Conn, ev: RawEvent) -> None:
        if not conn.client:
            return
        if ev.flags & EVF_H2STREAM:
            self._on_h2_done(conn, ev)
            return
        if conn.ws is not None:
            self._ws_end(conn, ev.ts, "closed (request finished)")
            self.upstreams.take(conn.pid, conn.key[2])
            conn.done_seq = ev.seq
            conn.done_recv_off = ev.offset
            conn.recv_off = max(conn.recv_off, ev.offset)
            conn.done_send_off = conn.send_off = max(conn.send_off, ev.aux)
            conn.last_done_ts = ev.ts
            conn.last_done_clock = ev.clock
            conn.proxied = False
            return
        if ev.flags & EVF_SHED:
            self._on_shed_done(conn, ev)
            return
        if ev.offset > conn.recv_off:
            self.stats.gaps += 1
            conn.requests.feed(b"", ev.offset - conn.recv_off, ev.ts)
            conn.recv_off = ev.offset
        error = None
        merged = False
        skipped = (ev.seq - conn.done_seq - 1) % 65536 if conn.done_seq or ev.seq != 1 else 0
        if skipped:
            # completions were lost: the requests they ended cannot be paired safely
            self.stats.lost_responses += skipped
            for _ in range(skipped):
                lost = conn.requests.take()
                if lost is not None:
                    self._emit(conn, lost, None, ev.ts, error="response lost (capture overflow)")
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
        attempts = self.upstreams.take(conn.pid, conn.key[2])
        self._emit(conn, req, resp_len, ev.ts, error=error, end_clock=ev.clock, parse=not merged,
                   upstream=attempts, kstatus=0 if merged else ev.status)
        conn.requests.settle()
        self._completed(conn, ev)

    @staticmethod
    def _completed(conn: _Conn, ev: RawEvent) -> None:
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

    def _on_shed_done(self, conn: _Conn, ev: RawEvent) -> None:
        """The kernel shed (some of) this exchange's payload: count it from its summary."""
        self.stats.shed += 1
        stream = conn.requests
        req = stream.done.pop(0) if stream.done else None
        if req is None or not req.method or req.error:
            req = ParsedRequest(start_ts=0.0)
            if ev.data:
                req.method, req.target, req.version = request_line_of(ev.data)
        start = ev.ts - ev.span if ev.span >= 0 else (conn.last_done_ts or ev.ts)
        req.start_ts = start
        if ev.clock_span >= 0 and ev.clock:
            req.start_clock = ev.clock - ev.clock_span
        else:
            req.start_clock = conn.last_done_clock  # pipelined: it began when the previous ended
        req.end_ts = ev.ts
        req.error = None
        req.body_discarded = True  # request_bytes below: nginx's own read counter
        req.head_bytes = max(0, ev.offset - conn.done_recv_off)
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
            self.stats.sampled += 1
        why = (_SAMPLED_NOTE if ev.flags & EVF_SAMPLED else
               "payload shed (capture overload): status, sizes and times from the kernel summary")
        self._emit(conn, req, resp_len, ev.ts, error=why, end_clock=ev.clock, parse=False,
                   upstream=attempts, kstatus=ev.status)
        self._completed(conn, ev)

    # -- TCP proxy sessions (stream module) --------------------------------------------------
    def _tcp_event(self, conn: _Conn, ev: RawEvent) -> None:
        if not conn.client:
            return
        if ev.kind == EV_STREAM_START:
            # bytes read before (preread) were not HTTP either
            conn.requests = RequestStream()
            conn.tcp = TcpSession(ev.ts, ev.clock, hole=ev.offset > 0)
            self.upstreams.mark_raw(conn.pid, conn.key[2])
            return
        if conn.tcp is None:  # the capture started during the session
            conn.requests = RequestStream()
            conn.tcp = TcpSession(conn.opened, 0.0, joined=True, hole=True)
        self._tcp_emit(conn, ev, ev.ts, "")

    def _tcp_emit(self, conn: _Conn, done: RawEvent | None, ts: float, why: str) -> None:
        sess, conn.tcp = conn.tcp, None
        if sess is None:
            return
        ex = tcp_exchange(sess, self._next_id, conn.seq, conn.pid, conn.peer, conn.local, conn.tls,
                          f"{conn.pid}:{conn.fd}:{conn.key[2]}", done, ts, why,
                          self.upstreams.take(conn.pid, conn.key[2]))
        self._next_id += 1
        conn.seq += 1
        self.stats.exchanges += 1
        self.on_exchange(ex)

    # -- WebSocket --------------------------------------------------------------------------
    def _upgrade(self, conn: _Conn, ev: RawEvent) -> None:
        """nginx wrote "101 Switching Protocols": the exchange ends here; what follows on the
        connection is a tunnel, summarised when nginx finishes the request."""
        end = ev.data.find(b"\r\n\r\n")
        head = end + 4 if end >= 0 else ev.length
        conn.segments.append((ev.data[:head], head))
        conn.send_first_ts = conn.send_first_ts or ev.ts
        conn.send_last_ts = ev.ts
        req = conn.requests.take()
        if req is None:
            req = conn.requests.current or ParsedRequest(start_ts=ev.ts, error="request not captured")
        attempts = self.upstreams.take(conn.pid, conn.key[2])
        ex_id = self._next_id
        self._emit(conn, req, head, ev.ts, end_clock=ev.clock, upstream=attempts, kstatus=101)
        conn.ws = WsTunnel(ex_id, f"{req.method} {req.target}".strip(), ev.ts, WsDirection(), WsDirection())
        conn.ws.outbound.feed(ev.data[head:], ev.length - head)
        conn.requests = RequestStream()
        conn.send_off = ev.offset + ev.length
        conn.done_send_off = ev.offset + head
        conn.segments = []
        conn.captured = 0
        conn.send_first_ts = conn.send_last_ts = 0.0
        conn.sendfile_bytes = 0
        conn.send_hole = False

    def _ws_end(self, conn: _Conn, ts: float, how: str) -> None:
        ws, conn.ws = conn.ws, None
        if ws is not None:
            self._lifecycle(ts, "websocket", conn.pid, ws.summary(ts, how))
            self.on_websocket(ws, ts)

    def on_websocket(self, ws: WsTunnel, ts: float) -> None:
        """Hook: a WebSocket tunnel ended (tests and sinks may override)."""

    # -- HTTP/2 -----------------------------------------------------------------------------
    def _on_h2_done(self, conn: _Conn, ev: RawEvent) -> None:
        """nginx freed (and logged) one HTTP/2 stream's request; ev.aux is its $bytes_sent."""
        if conn.h2 is None:
            # first seen part-way: frames and HPACK state unknown
            conn.h2 = H2Connection(body_limit=self.body_limit, from_start=False)
            conn.requests = RequestStream()
        if ev.offset > conn.recv_off:  # bytes read whose events were lost
            self.stats.gaps += 1
            conn.h2.feed_in(b"", ev.offset - conn.recv_off, ev.ts, ev.clock)
            conn.recv_off = ev.offset
        # upstream events name the request they serve (rid), as this one does: each stream
        # gets its own attempts. Without it (an older event source) they are known per client
        # connection only, so they go only to a stream that was alone.
        attempts = self.upstreams.take(conn.pid, conn.key[2], ev.rid)
        if conn.h2.joined:
            st = H2Stream(sid=0, start_ts=ev.ts)
            self._emit_h2(conn, st, ev.aux, ev.ts, ev.clock,
                          "joined mid-connection: HTTP/2 stream seen only at its end (HPACK "
                          "state unknown, so no headers)")
            return
        found, certain = conn.h2.take(ev.aux)
        if found is None:
            self._emit_h2(conn, H2Stream(sid=0, start_ts=ev.ts), ev.aux, ev.ts, ev.clock,
                          "HTTP/2 stream not captured")
            return
        st = found
        error = None if certain or st.reset else "HTTP/2 stream pairing uncertain (capture loss)"
        self._emit_h2(conn, st, ev.aux, ev.ts, ev.clock, error,
                      upstream=attempts if ev.rid or not st.concurrent else None)

    def _emit_h2(self, conn: _Conn, st: H2Stream, sent: int | None, ts: float, end_clock: float,
                 error: str | None, upstream: list[UpstreamAttempt] | None = None) -> None:
        pseudo = {k: v for k, v in st.request_headers if k.startswith(":")}
        host = pseudo.get(":authority", "")
        if not host:
            host = next((v for k, v in st.request_headers if k == "host"), "")
        reason = grpc_summary(pseudo.get(":path", ""), st.response_headers, st.response_trailers)
        ex = Exchange(
            id=self._next_id,
            start=st.start_ts,
            end=st.start_ts,
            pid=conn.pid,
            client=conn.peer,
            server=conn.local,
            tls=conn.tls,
            conn_id=f"{conn.pid}:{conn.fd}:{conn.key[2]}",
            conn_seq=conn.seq,
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", ""),
            version="HTTP/2.0",
            host=host,
            status=st.status,
            reason=reason,
            request_bytes=st.request_bytes,
            response_bytes=sent if sent is not None else st.frame_bytes,
            request_headers=st.request_headers + st.request_trailers,
            response_headers=st.response_headers + st.response_trailers,
            request_body=bytes(st.request_body),
            response_body=bytes(st.response_body),
            request_body_size=st.request_body_size,
            response_body_size=st.response_body_size,
            truncated=st.truncated or len(st.response_body) < st.response_body_size,
            error=error or st.error or st.reset,
            upstream=upstream or [],
        )
        if conn.h2 is not None and conn.h2.hpack_broken and not ex.error and not st.request_headers:
            ex.error = f"headers unknown: {conn.h2.hpack_broken}"
        self._next_id += 1
        conn.seq += 1
        ex.end = max(st.end_ts or ts, ex.start)
        if st.start_clock and end_clock:
            ex.nginx_ms = float(nginx_msec(end_clock) - nginx_msec(st.start_clock))
        if ex.error and not ex.method:
            self.stats.malformed += 1
        self.stats.exchanges += 1
        self.on_exchange(ex)

    # -- output -----------------------------------------------------------------------------
    def _emit(
        self,
        conn: _Conn,
        req: ParsedRequest,
        resp_len: int | None,
        ts: float,
        error: str | None = None,
        end_clock: float = 0.0,
        parse: bool = True,
        upstream: list[UpstreamAttempt] | None = None,
        kstatus: int = 0,
    ) -> None:
        start = req.start_ts
        start_clock = req.start_clock
        if conn.last_done_ts and start < conn.last_done_ts:
            start = conn.last_done_ts  # pipelined: nginx starts it once the previous one is done
            start_clock = max(start_clock, conn.last_done_clock)
        host = ""
        for k, v in req.headers:
            if k.lower() == "host":
                host = v
                break
        if not host and req.target.startswith(("http://", "https://")):
            host = req.target.split("/", 3)[2]
        ex = Exchange(
            id=self._next_id,
            start=start,
            end=start,
            pid=conn.pid,
            client=conn.peer,
            server=conn.local,
            tls=conn.tls,
            conn_id=f"{conn.pid}:{conn.fd}:{conn.key[2]}",
            conn_seq=conn.seq,
            method=req.method,
            target=req.target,
            version=req.version,
            host=host,
            request_bytes=req.head_bytes if req.body_discarded else req.total_bytes,
            request_headers=list(req.headers),
            request_body=bytes(req.body if req.method else req.raw),
            request_body_size=req.body_size,
            truncated=req.truncated,
            error=error or req.error,
            upstream=upstream or [],
        )
        self._next_id += 1
        conn.seq += 1
        if resp_len is not None:
            prefix = bytearray()
            for data, length in conn.segments:
                prefix += data
                if len(data) < length:
                    break
            resp = parse_response(bytes(prefix)) if parse else ParsedResponse()
            if resp.status is None and kstatus:
                # payload lost or shed: the status the kernel read from the response's first bytes
                resp.status = kstatus
                resp.error = None
            ex.status = resp.status
            ex.reason = resp.reason
            ex.response_headers = resp.headers
            ex.response_bytes = resp_len
            ex.response_body_size = max(0, resp_len - resp.head_bytes)
            ex.response_body = bytes(prefix[resp.body_offset : resp.body_offset + self.body_limit])
            ex.sendfile_bytes = conn.sendfile_bytes
            ex.truncated = ex.truncated or conn.send_hole or (
                len(prefix) - resp.body_offset < ex.response_body_size - conn.sendfile_bytes
            )
            ex.end = max(conn.send_last_ts or ts, start)
            if start_clock and end_clock:
                # nginx: (end.sec - start.sec) * 1000 + (end.msec - start.msec) on its cached clock
                ex.nginx_ms = float(nginx_msec(end_clock) - nginx_msec(start_clock))
            if resp.error and not ex.error:
                ex.error = resp.error
        else:
            ex.end = max(ts, start)
        if ex.error and not ex.method:
            self.stats.malformed += 1
        self.stats.exchanges += 1
        self.on_exchange(ex)

    def _lifecycle(self, ts: float, kind: str, pid: int, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(LifecycleEvent(ts=ts, kind=kind, pid=pid, detail=detail))
