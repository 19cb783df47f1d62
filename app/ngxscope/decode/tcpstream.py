"""Sessions of nginx's stream module (the TCP proxy): one record per client connection.

The payload of a proxied TCP session can be anything, HTTP-looking text included, so it is
never parsed: the bytes each way are kept (up to the body limit) as they crossed the wire.
The session is framed by nginx itself: EV_STREAM_START where it starts proxying, and
EV_STREAM_DONE where it finalizes (and logs) the session, carrying nginx's own counters
`$bytes_received`, `$bytes_sent` and `$status`, exact even when payload events were lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..capture.events import RawEvent, nginx_msec
from ..model import TCP, Exchange, UpstreamAttempt

__all__ = ["TcpSession", "tcp_exchange"]


@dataclass(slots=True)
class TcpSession:
    """A TCP proxy session on one client connection, while it runs."""

    start: float
    """Unix time nginx started proxying (the session's start, for `$session_time`)."""
    start_clock: float
    """nginx's cached clock then (0: unknown)."""
    joined: bool = False
    """The capture saw only the session's end."""
    inbound: bytearray = field(default_factory=bytearray)
    """Bytes nginx read from the client (the first `limit` of them)."""
    outbound: bytearray = field(default_factory=bytearray)
    """Bytes nginx wrote to the client (the first `limit` of them)."""
    hole: bool = False
    """Some payload was not captured (cap, loss, sendfile)."""

    def feed(self, ev: RawEvent, inbound: bool, expected_off: int, limit: int) -> None:
        """Bytes nginx moved on the client connection (`expected_off`: where the previous
        event of that direction ended, to see holes)."""
        buf = self.inbound if inbound else self.outbound
        if ev.offset != expected_off or len(ev.data) < ev.length:
            self.hole = True
        room = limit - len(buf)
        if room > 0:
            buf += ev.data[:room]


def tcp_exchange(sess: TcpSession, ex_id: int, conn_seq: int, pid: int, client: str, server: str,
                 tls: bool, conn_id: str, done: RawEvent | None, ts: float, why: str,
                 upstream: list[UpstreamAttempt]) -> Exchange:
    """The record of a finished session (`done`: its EV_STREAM_DONE; None: it was not seen
    to finish, `why` says why)."""
    ex = Exchange(id=ex_id, start=sess.start, end=max(ts, sess.start), pid=pid, client=client,
                  server=server, tls=tls, conn_id=conn_id, conn_seq=conn_seq, method=TCP,
                  version=TCP, upstream=upstream)
    ex.request_body = bytes(sess.inbound)
    ex.response_body = bytes(sess.outbound)
    if done is None:
        ex.request_bytes = ex.request_body_size = len(sess.inbound)
        ex.response_bytes = ex.response_body_size = len(sess.outbound)
        ex.error = f"session not finished by nginx: {why}"
        ex.truncated = True
        return ex
    ex.status = done.status
    ex.request_bytes = ex.request_body_size = done.offset
    ex.response_bytes = ex.response_body_size = done.aux
    ex.truncated = (sess.hole or len(sess.inbound) < done.offset or len(sess.outbound) < done.aux)
    if done.clock:
        ex.nginx_end = nginx_msec(done.clock) / 1000
    if sess.start_clock and done.clock:
        ex.nginx_ms = float(nginx_msec(done.clock) - nginx_msec(sess.start_clock))
    if sess.joined:
        ex.error = "joined mid-session: its start and some payload were not seen"
    return ex
