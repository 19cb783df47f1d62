"""Sessions of nginx's stream module (TCP proxy): bytes kept, never parsed as HTTP.

EV_STREAM_START puts a decode.tcpstream.TcpSession on the client connection; its bytes are
kept both ways, and one exchange is made per session at EV_STREAM_DONE (or when the
connection goes), with nginx's own counters and status.
"""

from __future__ import annotations

from ...capture.events import RawEvent
from ..connstate import Conn
from ..emitter import Emitter
from ..http1 import RequestStream
from ..tcpstream import TcpSession, tcp_exchange
from ..upstream import UpstreamTracker
from .base import ProtocolHandler

__all__ = ["TcpStreamHandler"]


class TcpStreamHandler(ProtocolHandler):
    """Client connections of the stream module (Conn.tcp set while a session runs)."""

    __slots__ = ("emit", "upstreams")

    def __init__(self, emit: Emitter, upstreams: UpstreamTracker) -> None:
        self.emit = emit
        self.upstreams = upstreams
        """Where the session's upstream attempts are marked raw and taken from."""

    def on_start(self, conn: Conn, ev: RawEvent) -> None:
        """EV_STREAM_START: a session starts proxying on `conn`."""
        # bytes read before (preread) were not HTTP either
        conn.requests = RequestStream()
        conn.tcp = TcpSession(ev.ts, ev.clock, hole=ev.offset > 0)
        self.upstreams.mark_raw(conn.pid, conn.key[2])

    def on_recv(self, conn: Conn, ev: RawEvent) -> None:
        assert conn.tcp is not None
        conn.tcp.feed(ev, True, conn.recv_off, self.emit.body_limit)
        conn.recv_off = ev.offset + ev.length

    def on_send(self, conn: Conn, ev: RawEvent) -> None:
        assert conn.tcp is not None
        conn.tcp.feed(ev, False, conn.send_off, self.emit.body_limit)
        conn.send_off = ev.offset + ev.length

    def on_done(self, conn: Conn, ev: RawEvent) -> None:
        """EV_STREAM_DONE: nginx finalized (and logged) the session."""
        if conn.tcp is None:  # the capture started during the session
            conn.requests = RequestStream()
            conn.tcp = TcpSession(conn.opened, 0.0, joined=True, hole=True)
        self._emit(conn, ev, ev.ts, "")

    def on_close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        self._emit(conn, None, ts, why.replace(" before response", ""))

    def _emit(self, conn: Conn, done: RawEvent | None, ts: float, why: str) -> None:
        """Hand out the session's exchange, if one runs (`done`: its EV_STREAM_DONE; None:
        it was not seen to finish, `why` says why)."""
        sess, conn.tcp = conn.tcp, None
        if sess is None:
            return
        emit = self.emit
        ex = tcp_exchange(sess, emit.next_id, conn.seq, conn.pid, conn.peer, conn.local, conn.tls,
                          f"{conn.pid}:{conn.fd}:{conn.key[2]}", done, ts, why,
                          self.upstreams.take(conn.pid, conn.key[2]))
        emit.emit(conn, ex)
