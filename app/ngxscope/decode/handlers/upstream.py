"""The upstream side: nginx's own connections to its backends.

Their bytes are not exchanges of their own: decode.upstream.UpstreamTracker turns them into
upstream attempts, which the client side's handlers take when nginx finishes the request
they served. This handler feeds the tracker the upstream connections' events and finds
their peers (the connect(2) before the connection was first seen, or the socket itself).
"""

from __future__ import annotations

from collections.abc import Callable

from ...capture.events import RawEvent
from ..connstate import Conn
from ..upstream import UpstreamTracker
from .base import ProtocolHandler

__all__ = ["UpstreamHandler"]


class UpstreamHandler(ProtocolHandler):
    """Connections nginx opened itself (not EVF_CLIENT)."""

    __slots__ = ("_connects", "peer_of", "tracker")

    def __init__(self, tracker: UpstreamTracker, peer_of: Callable[[int, int], str] | None = None) -> None:
        self.tracker = tracker
        self.peer_of = peer_of
        """Looks up the peer of an upstream connection whose connect(2) came before the capture."""
        self._connects: dict[tuple[int, int], str] = {}

    def on_connect(self, ev: RawEvent) -> None:
        """EV_CONNECT: nginx connects a socket (the connection is seen at its EV_OPEN)."""
        self._connects[(ev.pid, ev.fd)] = ev.peer
        self.tracker.on_connect(ev)

    def on_connected(self, ev: RawEvent) -> None:
        """EV_CONNECTED: how a non-blocking connect ended."""
        self.tracker.on_connected(ev)

    def on_open(self, conn: Conn, ev: RawEvent) -> None:
        """EV_OPEN of an upstream connection: its peer is the connect(2)'s address."""
        key = (ev.pid, ev.fd)
        conn.peer = self._connects.pop(key, conn.peer)
        if not conn.peer and self.peer_of is not None and key not in self.tracker.pending:
            conn.peer = self.peer_of(ev.pid, ev.fd)
        self.tracker.on_open(ev, conn.peer)

    def on_recv(self, conn: Conn, ev: RawEvent) -> None:
        conn.recv_off = ev.offset + ev.length
        self.tracker.on_data(ev, sending=False)

    def on_send(self, conn: Conn, ev: RawEvent) -> None:
        conn.send_off = ev.offset + ev.length
        self.tracker.on_data(ev, sending=True)

    def on_closing(self, ev: RawEvent) -> None:
        """EV_CLOSE: nginx closes the connection (a TCP proxy attempt's session ends)."""
        self.tracker.closing(ev)

    def on_close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        self.tracker.on_close(conn.key)

    def forget_client(self, conn: Conn) -> None:
        """A client connection went: attempts nobody took for it are dropped."""
        self.tracker.drop_client(conn.pid, conn.key[2])
