"""Turn the capture's raw events into exchanges: the dispatcher that owns the connections.

The :class:`Assembler` keeps one decode.connstate.Conn per connection nginx has open and
gives each event to the handler of the protocol that runs on it (decode.handlers, one class
per protocol behind one interface):

  client connection, bytes not yet anything else   handlers.http1      HTTP/1 exchanges
  its first bytes read are HTTP/2's preface         handlers.http2      one exchange per stream
  after a "101 Switching Protocols"                 handlers.websocket  the tunnel's summary
  a stream-module session (EV_STREAM_START)         handlers.tcpstream  one record per session
  nginx's own connections (to upstreams)            handlers.upstream   attempts, for the others

Handlers hand their exchanges out through the decode.emitter.Emitter they were given (which
numbers and counts them and calls `on_exchange`); they never call back here. Stream offsets
in every event reveal lost events; the handlers flag the exchanges affected.
"""

from __future__ import annotations

from collections.abc import Callable

from ..capture.events import (
    EV_CLOSE,
    EV_CONNECT,
    EV_CONNECTED,
    EV_COUNTED,
    EV_EXIT,
    EV_FORK,
    EV_OPEN,
    EV_RECV,
    EV_REQ_DONE,
    EV_REQ_LOG,
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
from .emitter import DecodeStats, Emitter
from .handlers.base import ProtocolHandler
from .handlers.http1 import Http1Handler
from .handlers.http2 import Http2Handler
from .handlers.tcpstream import TcpStreamHandler
from .handlers.upstream import UpstreamHandler
from .handlers.websocket import WebSocketHandler
from .http2 import PREFACE
from .proxyproto import ProxyHeader, parse_proxy_header
from .upstream import UpstreamTracker
from .websocket import WsTunnel

__all__ = ["Assembler"]

_PREFACE_START = PREFACE[:14]
"""What Http2Handler.is_preface compares a connection's first bytes read with."""


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
        self.emitter = emit = Emitter(on_exchange, on_event, body_limit)
        self.stats: DecodeStats = emit.stats
        self.upstreams = UpstreamTracker()
        """The upstream attempts, per client request (and the upstream connection pool)."""
        self.peer_of = peer_of
        """Looks up a client's peer when the capture never says it (fallback, lost EV_OPEN)."""
        self.http1 = Http1Handler(emit, self.upstreams, attach_ts=attach_ts, midway_window=midway_window)
        self.http2 = Http2Handler(emit, self.upstreams)
        self.websocket = WebSocketHandler(emit, self.upstreams)
        self.tcp = TcpStreamHandler(emit, self.upstreams)
        self.upstream = UpstreamHandler(self.upstreams, peer_of)
        self._conns: dict[ConnKey, Conn] = {}
        self._by_fd: dict[tuple[int, int], ConnKey] = {}
        self._logs: dict[tuple[ConnKey, int], RawEvent] = {}
        """EV_REQ_LOG waiting for the EV_REQ_DONE right behind it (same probe, same time)."""

    @property
    def on_websocket(self) -> Callable[[WsTunnel, float], None] | None:
        """Called with each WebSocket tunnel that ended (tests and sinks may set it)."""
        return self.emitter.on_websocket

    @on_websocket.setter
    def on_websocket(self, hook: Callable[[WsTunnel, float], None] | None) -> None:
        self.emitter.on_websocket = hook

    # -- entry point ----------------------------------------------------------------------
    def feed(self, ev: RawEvent) -> None:
        self.stats.events += 1
        kind = ev.kind
        if kind in (EV_RECV, EV_SEND, EV_SENDFILE):
            # every event of an exchange passes here: the known connection looked up inline
            conn = self._conns.get((ev.pid, ev.fd, ev.conn_ts))
            if conn is None or (ev.flags & EVF_TLS and not conn.tls):
                conn = self._conn_for(ev)
            handler: ProtocolHandler
            if conn.tcp is not None:
                handler = self.tcp
            elif not conn.client:
                handler = self.upstream
            else:
                if kind == EV_RECV and ev.offset == 0 and conn.recv_off == 0 and conn.proxy_client is None:
                    ev = self._take_proxy_header(conn, ev)
                    if not ev.length:
                        return
                if (kind == EV_RECV and conn.h2 is None and ev.offset == conn.recv_off == conn.done_recv_off
                        and ev.data[:14] == _PREFACE_START):   # Http2Handler.is_preface
                    self.http2.start(conn)
                if conn.h2 is not None:
                    handler = self.http2
                elif conn.ws is not None:
                    handler = self.websocket
                else:
                    handler = self.http1
            if kind == EV_RECV:
                handler.on_recv(conn, ev)
            else:
                handler.on_send(conn, ev)
        elif kind == EV_REQ_LOG:
            if ev.conn_ts:
                self._logs[((ev.pid, ev.fd, ev.conn_ts), ev.rid)] = ev
        elif kind == EV_REQ_DONE:
            if self._logs:
                paired = self._logs.pop(((ev.pid, ev.fd, ev.conn_ts), ev.rid), None)
                if paired is not None and paired.ts == ev.ts:
                    ev.log = paired.log
                if len(self._logs) > 1024:  # their EV_REQ_DONE was lost
                    self._logs.clear()
            if ev.conn_ts:
                conn = self._conns.get((ev.pid, ev.fd, ev.conn_ts))
                if conn is None or (ev.flags & EVF_TLS and not conn.tls):
                    conn = self._conn_for(ev)
                if not conn.client:
                    return
                if ev.flags & EVF_H2STREAM:
                    self.http2.on_done(conn, ev)
                elif conn.ws is not None:
                    self.websocket.on_done(conn, ev)
                else:
                    self.http1.on_done(conn, ev)
        elif kind == EV_COUNTED:
            self.stats.counted += ev.length
            conn_or_none = self._conns.get(ev.conn_key)
            if conn_or_none is not None and conn_or_none.client:
                self.http1.on_counted(conn_or_none, ev)
                if self.emitter.on_counted is not None:
                    self.emitter.on_counted(conn_or_none.peer, conn_or_none.local)
            else:
                self.stats.counted_unjoined += 1
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
                conn = self._conn_for(ev)
                if conn.client:
                    if kind == EV_STREAM_START:
                        self.tcp.on_start(conn, ev)
                    else:
                        self.tcp.on_done(conn, ev)
        elif kind == EV_CLOSE:
            conn_or_none = self._conns.get(ev.conn_key)
            if conn_or_none is not None:
                if not conn_or_none.client:
                    self.upstream.on_closing(ev)
                if ev.flags & EVF_NOMARK:
                    self.http1.frame_close(conn_or_none, ev)
                self._close(conn_or_none, ev.ts, "connection closed before response", sent=ev.aux)
        elif kind == EV_CONNECT:
            self.upstream.on_connect(ev)
        elif kind == EV_CONNECTED:
            self.upstream.on_connected(ev)
        elif kind == EV_FORK:
            self.emitter.lifecycle(ev.ts, "worker-start", int(ev.aux), f"forked by {ev.pid}")
        elif kind == EV_EXIT:
            self.emitter.lifecycle(ev.ts, "worker-exit", ev.pid, "process exited")
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
                self.upstream.on_open(conn, ev)
        return conn

    def _take_proxy_header(self, conn: Conn, ev: RawEvent) -> RawEvent:
        """A client connection's first bytes: a PROXY protocol header (``listen ...
        proxy_protocol``) is taken off them, the client it names kept on the connection; the
        rest is the request (or, for TLS, nginx's reads after the handshake)."""
        head = parse_proxy_header(ev.data)
        if not isinstance(head, ProxyHeader):
            return ev
        conn.proxy_client = head.client
        conn.recv_off = conn.done_recv_off = head.length
        rest = RawEvent(ev.kind, ev.ts, ev.pid, ev.fd, ev.conn_ts, head.length, ev.aux, ev.length - head.length,
                        ev.flags, ev.clock, ev.seq, ev.data[head.length :])
        return rest

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
        """`conn` goes: every handler on it ends what is still open, then it is forgotten."""
        if conn.tcp is not None:
            self.tcp.on_close(conn, ts, why)
        if conn.ws is not None:
            self.websocket.on_close(conn, ts, why)
        if conn.client:
            if conn.h2 is not None:
                self.http2.on_close(conn, ts, why)
            else:
                self.http1.on_close(conn, ts, why, sent)
            self.upstream.forget_client(conn)
        else:
            self.upstream.on_close(conn, ts, why)
        self._conns.pop(conn.key, None)
        if self._by_fd.get((conn.pid, conn.fd)) == conn.key:
            del self._by_fd[(conn.pid, conn.fd)]
        self.stats.open_conns = len(self._conns)
