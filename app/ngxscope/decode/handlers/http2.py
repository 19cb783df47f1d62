"""HTTP/2 connections: one exchange per stream.

The frames are decoded by decode.http2 as they are read and written; a stream ends where
nginx frees its request (EV_REQ_DONE with EVF_H2STREAM), whose event carries the stream's own
$bytes_sent: that pairs it with the decoded stream and sizes its response exactly.
"""

from __future__ import annotations

from ...capture.events import EV_SENDFILE, RawEvent, nginx_msec
from ...capture.reqlog import NginxLog
from ...model import UpstreamAttempt
from ..connstate import Conn
from ..emitter import Emitter
from ..http1 import RequestStream
from ..http2 import PREFACE, H2Connection, H2Stream, grpc_summary
from ..upstream import UpstreamTracker
from .base import ProtocolHandler

__all__ = ["Http2Handler"]


class Http2Handler(ProtocolHandler):
    """HTTP/2 on client connections (Conn.h2 set): frames in and out, streams at their end."""

    __slots__ = ("emit", "upstreams")

    def __init__(self, emit: Emitter, upstreams: UpstreamTracker) -> None:
        self.emit = emit
        self.upstreams = upstreams
        """Where the upstream attempts of a finished stream are taken from."""

    @staticmethod
    def is_preface(first: bytes) -> bool:
        """A connection's first bytes read (`first`) are HTTP/2's connection preface."""
        return first[:14] == PREFACE[:14]

    def start(self, conn: Conn, from_start: bool = True) -> H2Connection:
        """Decode `conn` as HTTP/2 from now on (from_start False: first seen part-way)."""
        conn.h2 = h2 = H2Connection(body_limit=self.emit.body_limit, from_start=from_start)
        return h2

    def on_recv(self, conn: Conn, ev: RawEvent) -> None:
        h2 = conn.h2
        assert h2 is not None
        if ev.offset > conn.recv_off:
            self.emit.stats.gaps += 1
            h2.feed_in(b"", ev.offset - conn.recv_off, ev.ts, ev.clock)
        h2.feed_in(ev.data, ev.length, ev.ts, ev.clock)
        conn.recv_off = ev.offset + ev.length

    def on_send(self, conn: Conn, ev: RawEvent) -> None:
        h2 = conn.h2
        assert h2 is not None
        if ev.offset > conn.send_off:
            self.emit.stats.gaps += 1
            h2.feed_out(b"", ev.offset - conn.send_off, ev.ts)
        h2.feed_out(ev.data if ev.kind != EV_SENDFILE else b"", ev.length, ev.ts)
        conn.send_off = ev.offset + ev.length

    def on_done(self, conn: Conn, ev: RawEvent) -> None:
        """nginx freed (and logged) one HTTP/2 stream's request; ev.aux is its $bytes_sent."""
        h2 = conn.h2
        if h2 is None:
            # first seen part-way: frames and HPACK state unknown
            h2 = self.start(conn, from_start=False)
            conn.requests = RequestStream()
        if ev.offset > conn.recv_off:  # bytes read whose events were lost
            self.emit.stats.gaps += 1
            h2.feed_in(b"", ev.offset - conn.recv_off, ev.ts, ev.clock)
            conn.recv_off = ev.offset
        # upstream events name the request they serve (rid), as this one does: each stream
        # gets its own attempts. Without it (an older event source) they are known per client
        # connection only, so they go only to a stream that was alone.
        attempts = self.upstreams.take(conn.pid, conn.key[2], ev.rid)
        if h2.joined:
            st = H2Stream(sid=0, start_ts=ev.ts)
            self._emit(conn, st, ev.aux, ev.ts, ev.clock,
                       "joined mid-connection: HTTP/2 stream seen only at its end (HPACK "
                       "state unknown, so no headers)")
            return
        found, certain = h2.take(ev.aux)
        if found is None:
            self._emit(conn, H2Stream(sid=0, start_ts=ev.ts), ev.aux, ev.ts, ev.clock,
                       "HTTP/2 stream not captured")
            return
        st = found
        error = None if certain or st.reset else "HTTP/2 stream pairing uncertain (capture loss)"
        self._emit(conn, st, ev.aux, ev.ts, ev.clock, error,
                   upstream=attempts if ev.rid or not st.concurrent else None, ngx=ev.log)

    def on_close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        """Streams nginx never finished end with the connection."""
        assert conn.h2 is not None
        for st in conn.h2.leftovers():
            if st.request_headers or st.error:
                self._emit(conn, st, None, ts, 0.0, f"stream not finished by nginx: {why}")

    def _emit(self, conn: Conn, st: H2Stream, sent: int | None, ts: float, end_clock: float,
              error: str | None, upstream: list[UpstreamAttempt] | None = None,
              ngx: NginxLog | None = None) -> None:
        """Hand out the exchange of stream `st`; sent is nginx's $bytes_sent for it (None:
        nginx never finished it, so the size of its frames); ngx what nginx logged for it."""
        pseudo = {k: v for k, v in st.request_headers if k.startswith(":")}
        host = pseudo.get(":authority", "")
        if not host:
            host = next((v for k, v in st.request_headers if k == "host"), "")
        reason = grpc_summary(pseudo.get(":path", ""), st.response_headers, st.response_trailers)
        ex = self.emit.exchange(conn, st.start_ts, st.start_ts)
        ex.method = pseudo.get(":method", "")
        ex.target = pseudo.get(":path", "")
        ex.version = "HTTP/2.0"
        ex.host = host
        ex.status = st.status
        ex.reason = reason
        ex.request_bytes = st.request_bytes
        ex.response_bytes = sent if sent is not None else st.frame_bytes
        ex.request_headers = st.request_headers + st.request_trailers
        ex.response_headers = st.response_headers + st.response_trailers
        ex.request_body = bytes(st.request_body)
        ex.response_body = bytes(st.response_body)
        ex.request_body_size = st.request_body_size
        ex.response_body_size = st.response_body_size
        ex.truncated = st.truncated or len(st.response_body) < st.response_body_size
        ex.error = error or st.error or st.reset
        if upstream:
            ex.upstream = upstream
        if conn.h2 is not None and conn.h2.hpack_broken and not ex.error and not st.request_headers:
            ex.error = f"headers unknown: {conn.h2.hpack_broken}"
        ex.end = max(st.end_ts or ts, ex.start)
        if end_clock:
            ex.nginx_end = nginx_msec(end_clock) / 1000
        if st.start_clock and end_clock:
            ex.nginx_ms = float(nginx_msec(end_clock) - nginx_msec(st.start_clock))
        if ngx is not None:
            clean = not ex.error and st.status is not None and sent is not None
            self.emit.nginx.apply(ex, ngx, st.status if clean else None, sent if clean else None)
        self.emit.emit(conn, ex)
