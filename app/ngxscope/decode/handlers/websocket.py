"""WebSocket tunnels: an HTTP/1 connection nginx answered with "101 Switching Protocols".

The upgrade itself is an HTTP/1 exchange (decode.handlers.http1 puts a
decode.websocket.WsTunnel and the pending exchange, Conn.upgrade, on the connection); from
then on nginx relays frames (or any other protocol's bytes), which are summarised per
direction and handed out as a lifecycle event when nginx finishes the request or the
connection goes. The exchange is handed out then, its response bytes being the 101 head and
every byte relayed to the client, as nginx's $bytes_sent counts them.
"""

from __future__ import annotations

from ...capture.events import EV_SENDFILE, RawEvent
from ...capture.reqlog import NginxLog
from ..connstate import Conn
from ..emitter import Emitter
from ..upstream import UpstreamTracker
from .base import ProtocolHandler
from .h1exchange import emit_h1

__all__ = ["WebSocketHandler"]


class WebSocketHandler(ProtocolHandler):
    """Client connections carrying a WebSocket tunnel (Conn.ws set)."""

    __slots__ = ("emit", "upstreams")

    def __init__(self, emit: Emitter, upstreams: UpstreamTracker) -> None:
        self.emit = emit
        self.upstreams = upstreams

    def on_recv(self, conn: Conn, ev: RawEvent) -> None:
        assert conn.ws is not None
        conn.ws.inbound.feed(ev.data, ev.length + max(0, ev.offset - conn.recv_off))
        conn.recv_off = ev.offset + ev.length

    def on_send(self, conn: Conn, ev: RawEvent) -> None:
        ws = conn.ws
        assert ws is not None
        if ev.offset > conn.send_off:
            ws.outbound.feed(b"", ev.offset - conn.send_off)
        ws.outbound.feed(ev.data if ev.kind != EV_SENDFILE else b"", ev.length)
        conn.send_off = ev.offset + ev.length

    def on_done(self, conn: Conn, ev: RawEvent) -> None:
        """nginx finished the upgraded request: the tunnel is over, the connection's counters
        move past it."""
        self._emit_upgrade(conn, ev.ts, ev.clock, ev.aux, ev.log)
        self._end(conn, ev.ts, "closed (request finished)")
        # the attempts were the upgrade's (handed out with it); a relay leaves none to keep
        self.upstreams.take(conn.pid, conn.key[2])
        conn.done_seq = ev.seq
        conn.done_recv_off = ev.offset
        conn.recv_off = max(conn.recv_off, ev.offset)
        conn.done_send_off = conn.send_off = max(conn.send_off, ev.aux)
        conn.last_done_ts = ev.ts
        conn.last_done_clock = ev.clock
        conn.proxied = False

    def on_close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        self._emit_upgrade(conn, ts, 0.0, conn.send_off if sent is None else max(sent, conn.send_off), None)
        self._end(conn, ts, f"ended ({why.replace(' before response', '')})")

    def _emit_upgrade(self, conn: Conn, ts: float, clock: float, sent: int, ngx: NginxLog | None) -> None:
        """Hand out the upgrade's exchange: the 101 head, then `sent` (the connection's write
        offset now) minus the head's end relayed through the tunnel."""
        up, conn.upgrade = conn.upgrade, None
        if up is None:
            return
        conn.segments = [(up.head, up.head_len)]
        conn.send_first_ts, conn.send_last_ts = up.send_first_ts, ts
        conn.sendfile_bytes = 0
        conn.send_hole = False
        relayed = max(0, sent - up.send_off - up.head_len)
        ex = emit_h1(self.emit, conn, up.request, up.head_len, ts, end_clock=clock, upstream=up.upstream,
                     kstatus=101, ngx=ngx, tunnel_bytes=relayed)
        conn.segments = []
        conn.send_first_ts = conn.send_last_ts = 0.0
        if conn.ws is not None:
            conn.ws.exchange_id = ex.id

    def _end(self, conn: Conn, ts: float, how: str) -> None:
        ws, conn.ws = conn.ws, None
        if ws is not None:
            self.emit.tunnel_ended(ws, ts, conn.pid, how)
