"""HTTP/2 streams out of the assembler (decode.assembler): one exchange per stream.

The frames are decoded by decode.http2 as they are read and written; a stream ends where
nginx frees its request (EV_REQ_DONE with EVF_H2STREAM), whose event carries the stream's own
$bytes_sent: that pairs it with the decoded stream and sizes its response exactly.

Part of the Assembler split by topic: the functions take the Assembler and number, count and
hand out the exchanges through it, as methods would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..capture.events import RawEvent, nginx_msec
from ..model import UpstreamAttempt
from .connstate import Conn
from .h1exchange import conn_exchange
from .http1 import RequestStream
from .http2 import H2Connection, H2Stream, grpc_summary

if TYPE_CHECKING:
    from .assembler import Assembler

__all__ = ["emit_h2", "on_h2_done"]


def on_h2_done(asm: Assembler, conn: Conn, ev: RawEvent) -> None:
    """nginx freed (and logged) one HTTP/2 stream's request; ev.aux is its $bytes_sent."""
    if conn.h2 is None:
        # first seen part-way: frames and HPACK state unknown
        conn.h2 = H2Connection(body_limit=asm.body_limit, from_start=False)
        conn.requests = RequestStream()
    if ev.offset > conn.recv_off:  # bytes read whose events were lost
        asm.stats.gaps += 1
        conn.h2.feed_in(b"", ev.offset - conn.recv_off, ev.ts, ev.clock)
        conn.recv_off = ev.offset
    # upstream events name the request they serve (rid), as this one does: each stream
    # gets its own attempts. Without it (an older event source) they are known per client
    # connection only, so they go only to a stream that was alone.
    attempts = asm.upstreams.take(conn.pid, conn.key[2], ev.rid)
    if conn.h2.joined:
        st = H2Stream(sid=0, start_ts=ev.ts)
        emit_h2(asm, conn, st, ev.aux, ev.ts, ev.clock,
                "joined mid-connection: HTTP/2 stream seen only at its end (HPACK "
                "state unknown, so no headers)")
        return
    found, certain = conn.h2.take(ev.aux)
    if found is None:
        emit_h2(asm, conn, H2Stream(sid=0, start_ts=ev.ts), ev.aux, ev.ts, ev.clock,
                "HTTP/2 stream not captured")
        return
    st = found
    error = None if certain or st.reset else "HTTP/2 stream pairing uncertain (capture loss)"
    emit_h2(asm, conn, st, ev.aux, ev.ts, ev.clock, error,
            upstream=attempts if ev.rid or not st.concurrent else None)


def emit_h2(asm: Assembler, conn: Conn, st: H2Stream, sent: int | None, ts: float,
            end_clock: float, error: str | None,
            upstream: list[UpstreamAttempt] | None = None) -> None:
    """Hand out the exchange of stream `st`; sent is nginx's $bytes_sent for it (None: nginx
    never finished it, so the size of its frames)."""
    pseudo = {k: v for k, v in st.request_headers if k.startswith(":")}
    host = pseudo.get(":authority", "")
    if not host:
        host = next((v for k, v in st.request_headers if k == "host"), "")
    reason = grpc_summary(pseudo.get(":path", ""), st.response_headers, st.response_trailers)
    ex = conn_exchange(asm, conn, st.start_ts, st.start_ts)
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
    asm._next_id += 1
    conn.seq += 1
    ex.end = max(st.end_ts or ts, ex.start)
    if st.start_clock and end_clock:
        ex.nginx_ms = float(nginx_msec(end_clock) - nginx_msec(st.start_clock))
    if ex.error and not ex.method:
        asm.stats.malformed += 1
    asm.stats.exchanges += 1
    asm.on_exchange(ex)
