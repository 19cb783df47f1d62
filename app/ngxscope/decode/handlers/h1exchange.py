"""One HTTP/1 exchange, as the HTTP/1 handler (decode.handlers.http1) hands it out.

The request is as decode.http1 framed it; the response is what nginx wrote on the connection
since the previous completion (Conn.segments, payload kept up to the body limit), sized by the
byte counters nginx's completion event carried. Also used for requests that never got a
response (resp_len None) and for the "101 Switching Protocols" ending a WebSocket upgrade.

The exchange is numbered, counted and handed out through the emitter (decode.emitter).
"""

from __future__ import annotations

from ...capture.events import RawEvent, nginx_msec
from ...capture.reqlog import NginxLog
from ...model import Exchange, UpstreamAttempt
from ..connstate import Conn
from ..emitter import Emitter
from ..http1 import ParsedRequest, parse_response_fields

__all__ = ["emit_h1", "emit_summary"]


def emit_h1(
    emit: Emitter,
    conn: Conn,
    req: ParsedRequest,
    resp_len: int | None,
    ts: float,
    error: str | None = None,
    end_clock: float = 0.0,
    parse: bool = True,
    upstream: list[UpstreamAttempt] | None = None,
    kstatus: int = 0,
    summary_only: bool = False,
    ngx: NginxLog | None = None,
    tunnel_bytes: int = 0,
    subrequests: list[UpstreamAttempt] | None = None,
) -> Exchange:
    """Hand out the exchange of `req`, answered by the resp_len bytes nginx wrote since the
    previous completion (None: no response). parse=False when those bytes are not one whole
    response (merged by lost completions, or shed); kstatus is the status the kernel read,
    for when the response head was not captured; summary_only: the exchange is counted
    from the kernel summary (see `Exchange.summary_only`); ngx what nginx logged for it (its
    values win once they proved right: decode.nginxlog); tunnel_bytes what nginx relayed to
    the client after a 101 response (counted in the response's bytes, not its body);
    subrequests the attempts of its subrequests (`Exchange.subrequest_upstream`)."""
    start = req.start_ts
    start_clock = req.start_clock
    if conn.last_done_ts and start < conn.last_done_ts:
        start = conn.last_done_ts  # pipelined: nginx starts it once the previous one is done
        start_clock = max(start_clock, conn.last_done_clock)
    host = ""
    for k, v in req.headers:   # lower() only what may match: every exchange passes here
        if len(k) == 4 and k.lower() == "host":
            host = v
            break
    if not host and req.target.startswith(("http://", "https://")):
        host = req.target.split("/", 3)[2]
    ex = emit.exchange(conn, start, start)
    ex.method = req.method
    ex.target = req.target
    ex.version = req.version
    ex.host = host
    ex.request_bytes = req.head_bytes if req.body_discarded else req.total_bytes
    ex.request_headers = list(req.headers)
    ex.request_body = bytes(req.body if req.method else req.raw)
    ex.request_body_size = req.body_size
    ex.truncated = req.truncated
    ex.error = error or req.error
    if summary_only:
        ex.summary_only = True
    if upstream:
        ex.upstream = upstream
    if subrequests:
        ex.subrequest_upstream = subrequests
    if end_clock:
        end_ms = nginx_msec(end_clock)
        ex.nginx_end = end_ms / 1000
        if start_clock:
            # nginx: (end.sec - start.sec) * 1000 + (end.msec - start.msec) on its cached clock
            ex.nginx_ms = float(end_ms - nginx_msec(start_clock))
    if resp_len is not None:
        segments = conn.segments
        prefix: bytes
        if len(segments) == 1:   # the usual response: one write (no copy)
            prefix = segments[0][0]
            if type(prefix) is not bytes:
                prefix = bytes(prefix)
        else:
            joined = bytearray()
            for data, length in segments:
                joined += data
                if len(data) < length:
                    break
            prefix = bytes(joined)
        if parse:
            status, reason, _version, headers, head_bytes, resp_error = parse_response_fields(prefix)
        else:
            status, reason, headers, head_bytes, resp_error = None, "", [], 0, None
        if status is None and kstatus:
            # payload lost or shed: the status the kernel read from the response's first bytes
            status = kstatus
            resp_error = None
        ex.status = status
        ex.reason = reason
        ex.response_headers = headers
        ex.response_bytes = resp_len + tunnel_bytes
        ex.response_body_size = max(0, resp_len - head_bytes)
        # the body starts right after the heads (ParsedResponse.body_offset == head_bytes)
        ex.response_body = prefix[head_bytes : head_bytes + emit.body_limit]
        ex.sendfile_bytes = conn.sendfile_bytes
        ex.truncated = ex.truncated or conn.send_hole or (
            len(prefix) - head_bytes < ex.response_body_size - conn.sendfile_bytes
        )
        # when nginx finished (and logged) the request: its last write, or later when it still
        # waited for the upstream to end its answer, or for a lingering close
        ex.end = max(ts, conn.send_last_ts, start)
        if resp_error and not ex.error:
            ex.error = resp_error
        if ngx is not None:
            # nginx's values checked against a response captured whole and cleanly parsed
            clean = parse and not resp_error and not conn.send_hole and status not in (None, 101)
            emit.nginx.apply(ex, ngx, status if clean else None, resp_len if clean else None)
    else:
        ex.end = max(ts, start)
        if ngx is not None:
            emit.nginx.apply(ex, ngx, None, None)
    emit.emit(conn, ex)
    return ex


def emit_summary(
    emit: Emitter,
    conn: Conn,
    ev: RawEvent,
    line: tuple[str, str, str],
    start: float,
    start_clock: float,
    request_bytes: int,
    resp_len: int,
    upstream: list[UpstreamAttempt],
) -> None:
    """The exchange emit_h1 gives for a completion of which only the kernel summary came (no
    request parsed, no response byte captured: `line` is the method, target and version
    from the summary's first bytes), built without the parsed-message objects: at
    saturation most exchanges are sampled out and take this path."""
    method, target, version = line
    if conn.last_done_ts and start < conn.last_done_ts:
        start = conn.last_done_ts  # pipelined: nginx starts it once the previous one is done
        start_clock = max(start_clock, conn.last_done_clock)
    body_size = max(0, resp_len)
    ex = emit.exchange(conn, start, max(conn.send_last_ts or ev.ts, start))
    ex.method = method
    ex.target = target
    ex.version = version
    ex.host = target.split("/", 3)[2] if target.startswith(("http://", "https://")) else ""
    ex.status = ev.status or None
    ex.request_bytes = request_bytes
    ex.response_bytes = resp_len
    ex.response_body_size = body_size
    ex.sendfile_bytes = conn.sendfile_bytes
    ex.truncated = conn.send_hole or body_size > conn.sendfile_bytes
    ex.summary_only = True
    ex.upstream = upstream
    if ev.clock:
        ex.nginx_end = nginx_msec(ev.clock) / 1000
    if start_clock and ev.clock:
        ex.nginx_ms = float(nginx_msec(ev.clock) - nginx_msec(start_clock))
    if ev.log is not None:
        emit.nginx.apply(ex, ev.log, None, None)
    emit.emit(conn, ex)

