"""The interface every protocol handler has: the dispatcher feeds it a connection's events.

A handler keeps its per-connection state on the connection (decode.connstate.Conn), so one
handler object serves every connection of its protocol. It emits exchanges and events
through the emitter (decode.emitter) it was given; it never calls back the dispatcher.
"""

from __future__ import annotations

from ...capture.events import RawEvent
from ..connstate import Conn

__all__ = ["ProtocolHandler"]


class ProtocolHandler:
    """Feed methods for the events of a connection; those a protocol ignores do nothing."""

    __slots__ = ()

    def on_recv(self, conn: Conn, ev: RawEvent) -> None:
        """Bytes nginx read on `conn` (EV_RECV)."""

    def on_send(self, conn: Conn, ev: RawEvent) -> None:
        """Bytes nginx wrote on `conn` (EV_SEND, or EV_SENDFILE: counted, not captured)."""

    def on_done(self, conn: Conn, ev: RawEvent) -> None:
        """nginx finished (and logged) a request or session on `conn` (EV_REQ_DONE,
        EV_STREAM_DONE)."""

    def on_close(self, conn: Conn, ts: float, why: str, sent: int | None = None) -> None:
        """`conn` goes away (`why`: closed, worker exited, capture ended...); `sent`: nginx's
        write counter at the close, when known. What is still open ends now."""
