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

This module routes the events and keeps the connections; the rest is split by topic into
modules whose functions take the Assembler as a method takes self (plain calls: this runs
for every event):

  decode.connstate    what is kept per connection (Conn)
  decode.h1responses  where HTTP/1 responses end: completions, framing without them, shedding
  decode.h1exchange   the HTTP/1 exchange, request and response
  decode.h2streams    HTTP/2 streams, one exchange each
  decode.tunnels      TCP proxy sessions and WebSocket tunnels
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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
    EVF_TLS,
    RawEvent,
)
from ..model import Exchange, LifecycleEvent
from .connstate import Conn, ConnKey
from .h1exchange import emit_h1
from .h1responses import frame, frame_close, on_done
from .h2streams import emit_h2
from .http2 import PREFACE, H2Connection
from .tunnels import tcp_emit, tcp_event, upgrade, ws_end
from .upstream import UpstreamTracker
from .websocket import WsTunnel

__all__ = ["Assembler", "AssemblerStats"]

log = logging.getLogger(__name__)


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
        self._conns: dict[ConnKey, Conn] = {}
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
                on_done(self, self._conn_for(ev), ev)
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
                tcp_event(self, self._conn_for(ev), ev)
        elif kind == EV_CLOSE:
            conn_or_none = self._conns.get(ev.conn_key)
            if conn_or_none is not None:
                if not conn_or_none.client:
                    self.upstreams.closing(ev)
                if ev.flags & EVF_NOMARK:
                    frame_close(self, conn_or_none, ev)
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
    def _open(self, ev: RawEvent) -> Conn:
        old = self._by_fd.get((ev.pid, ev.fd))
        if old is not None and old != ev.conn_key and old in self._conns:
            # the close of the previous connection on this fd was lost
            self._close(self._conns[old], ev.ts, "connection replaced before response")
        conn = self._conns.get(ev.conn_key)
        if conn is None:
            client = bool(ev.flags & EVF_CLIENT)
            conn = Conn(
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

    def _conn_for(self, ev: RawEvent) -> Conn:
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

    def _close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        if conn.tcp is not None:
            tcp_emit(self, conn, None, ts, why.replace(" before response", ""))
        if conn.ws is not None:
            ws_end(self, conn, ts, f"ended ({why.replace(' before response', '')})")
        if conn.client and conn.h2 is not None:
            for st in conn.h2.leftovers():
                if st.request_headers or st.error:
                    emit_h2(self, conn, st, None, ts, 0.0, f"stream not finished by nginx: {why}")
        elif conn.client:
            if sent is not None and sent > conn.done_send_off:
                # nginx wrote a response whose completion event was lost
                req = conn.requests.take()
                if req is not None:
                    if sent > conn.send_off:
                        conn.segments.append((b"", sent - conn.send_off))
                    emit_h1(self, conn, req, sent - conn.done_send_off, ts,
                            error="response end not seen (capture overflow)")
                    conn.done_send_off = sent
            while True:
                req = conn.requests.take()
                if req is None:
                    break
                if req.method or req.error:
                    emit_h1(self, conn, req, None, ts, error=why)
            cur = conn.requests.current
            if cur is not None and cur.method and not cur.answered:
                emit_h1(self, conn, cur, None, ts, error=why)
        if conn.client:
            self.upstreams.drop_client(conn.pid, conn.key[2])
        else:
            self.upstreams.on_close(conn.key)
        self._conns.pop(conn.key, None)
        if self._by_fd.get((conn.pid, conn.fd)) == conn.key:
            del self._by_fd[(conn.pid, conn.fd)]
        self.stats.open_conns = len(self._conns)

    # -- bytes ------------------------------------------------------------------------------
    def _on_recv(self, conn: Conn, ev: RawEvent) -> None:
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

    def _on_send(self, conn: Conn, ev: RawEvent) -> None:
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
            upgrade(self, conn, ev)
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
            frame(self, conn, ev)

    # -- hooks and lifecycle ----------------------------------------------------------------
    def on_websocket(self, ws: WsTunnel, ts: float) -> None:
        """Hook: a WebSocket tunnel ended (tests and sinks may override)."""

    def _lifecycle(self, ts: float, kind: str, pid: int, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(LifecycleEvent(ts=ts, kind=kind, pid=pid, detail=detail))
