"""Connections that stop carrying HTTP requests: TCP proxy sessions and WebSocket tunnels.

A stream-module (TCP proxy) session is never parsed as HTTP: decode.tcpstream keeps its
bytes, and one exchange is made per session at EV_STREAM_DONE (or when the connection goes).
An HTTP/1 connection nginx answered with "101 Switching Protocols" becomes a WebSocket
tunnel: the upgrade is an exchange of its own, the frames that follow are summarised by
decode.websocket when nginx finishes the request.

Part of the Assembler (decode.assembler) split by topic: the functions take the Assembler
and work on its state, as methods would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..capture.events import EV_STREAM_START, RawEvent
from .connstate import Conn
from .h1exchange import emit_h1
from .http1 import ParsedRequest, RequestStream
from .tcpstream import TcpSession, tcp_exchange
from .websocket import WsDirection, WsTunnel

if TYPE_CHECKING:
    from .assembler import Assembler

__all__ = ["tcp_emit", "tcp_event", "upgrade", "ws_end"]


# -- TCP proxy sessions (stream module) --------------------------------------------------
def tcp_event(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
    """EV_STREAM_START / EV_STREAM_DONE: a TCP proxy session starts or ends on conn."""
    if not conn.client:
        return
    if ev.kind == EV_STREAM_START:
        # bytes read before (preread) were not HTTP either
        conn.requests = RequestStream()
        conn.tcp = TcpSession(ev.ts, ev.clock, hole=ev.offset > 0)
        asm.upstreams.mark_raw(conn.pid, conn.key[2])
        return
    if conn.tcp is None:  # the capture started during the session
        conn.requests = RequestStream()
        conn.tcp = TcpSession(conn.opened, 0.0, joined=True, hole=True)
    tcp_emit(asm, conn, ev, ev.ts, "")


def tcp_emit(asm: Assembler, conn: Conn, done: RawEvent | None, ts: float, why: str) -> None:
    """Hand out the session's exchange, if one runs (`done`: its EV_STREAM_DONE; None: it
    was not seen to finish, `why` says why)."""
    sess, conn.tcp = conn.tcp, None
    if sess is None:
        return
    ex = tcp_exchange(sess, asm._next_id, conn.seq, conn.pid, conn.peer, conn.local, conn.tls,
                      f"{conn.pid}:{conn.fd}:{conn.key[2]}", done, ts, why,
                      asm.upstreams.take(conn.pid, conn.key[2]))
    asm._next_id += 1
    conn.seq += 1
    asm.stats.exchanges += 1
    asm.on_exchange(ex)


# -- WebSocket --------------------------------------------------------------------------
def upgrade(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
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
    attempts = asm.upstreams.take(conn.pid, conn.key[2])
    ex_id = asm._next_id
    emit_h1(asm, conn, req, head, ev.ts, end_clock=ev.clock, upstream=attempts, kstatus=101)
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


def ws_end(asm: Assembler, conn: Conn, ts: float, how: str) -> None:
    """The tunnel ended: its summary goes out as a lifecycle event and to the on_websocket hook."""
    ws, conn.ws = conn.ws, None
    if ws is not None:
        asm._lifecycle(ts, "websocket", conn.pid, ws.summary(ts, how))
        asm.on_websocket(ws, ts)
