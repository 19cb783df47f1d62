"""nginx's own access-log values for an exchange (capture.events.NginxLog), checked first.

Where nginx logs something the bytes do not show ($status 444 or 499 for a request it never
answered, $request_length after the head moved into large_client_header_buffers, the request
line of a request it rejected), the values it read from its own request struct at the
completion are the truth. They come from struct offsets computed per build
(capture.layout); a wrong offset would make them nonsense, so the first completions whose
response was captured whole are a self-check: nginx's status and byte count must equal what
the bytes say. On the first disagreement the values are distrusted for the rest of the
capture (the byte-derived ones stay, and the reason is logged and kept in
:attr:`NginxValues.distrusted`).
"""

from __future__ import annotations

import logging

from ..capture.reqlog import NginxLog
from ..model import Exchange
from .upstates import attempts_from_states

__all__ = ["NginxValues"]

log = logging.getLogger(__name__)

_CHECKS = 8
"""Agreeing completions after which the values are trusted without further checks."""

_NO_RESPONSE = "no response bytes captured"
_UNSENT = {
    444: "nginx closed the connection without a response (444)",
    499: "the client closed the connection before nginx answered (499)",
    408: "nginx timed out reading the request and closed the connection (408)",
}
"""Statuses nginx logs for responses it never sent, in nginx's words."""


class NginxValues:
    """Applies nginx's logged values to exchanges once they proved right."""

    __slots__ = ("agreed", "distrusted")

    def __init__(self) -> None:
        self.agreed = 0
        """Completions whose nginx values agreed with the bytes so far (stops at _CHECKS)."""
        self.distrusted = ""
        """Why nginx's values are not used ("" while they are)."""

    def check(self, ngx: NginxLog, status: int | None, resp_len: int | None) -> bool:
        """Are ngx's values usable? `status` and `resp_len`: what the captured bytes say about
        the same response (None: not known)."""
        if self.distrusted:
            return False
        why = ""
        # $request_length can be negative: nginx 1.22 subtracts what it discarded of a chunked
        # body from it (logged so, e.g. -3598): nginx's word, not a wrong offset
        if (not 0 <= ngx.status < 1000 or not -(1 << 48) < ngx.request_length < 1 << 48
                or not 0 <= ngx.bytes_sent < 1 << 48):
            why = f"implausible values (status {ngx.status}, request_length {ngx.request_length})"
        elif self.agreed < _CHECKS and status is not None and resp_len is not None:
            if ngx.status != status or ngx.bytes_sent != resp_len:
                why = (f"nginx's status/bytes_sent {ngx.status}/{ngx.bytes_sent} disagree with the "
                       f"response bytes {status}/{resp_len}")
            else:
                self.agreed += 1
        if why:
            self.distrusted = why
            log.warning("not using the values read from nginx's request struct (wrong offsets for "
                        "this build?): %s; using the byte-derived ones", why)
            return False
        return True

    def apply(self, ex: Exchange, ngx: NginxLog, checked_status: int | None, checked_len: int | None) -> None:
        """Give `ex` nginx's $status, $request_length, $bytes_sent, the location nginx chose
        (`location_via` "nginx"), $msec and $request_time, its upstream attempts
        (`upstream_via` "nginx") and, when its request line was not understood from the
        bytes, nginx's method, URI and protocol."""
        if not self.check(ngx, checked_status, checked_len):
            return
        if ngx.status:
            ex.status = ngx.status
        if ngx.location is not None:
            # the location nginx chose; the recorder checks it against the configuration
            ex.location, ex.location_via = ngx.location or None, "nginx"
        ex.request_bytes = ngx.request_length
        ex.response_bytes = ngx.bytes_sent
        if ngx.server and ex.server.startswith("unix:") and ex.server != ngx.server:
            ex.server = ngx.server  # a unix listener's path, whole
        if ngx.remote and ngx.remote != ex.client:
            ex.remote = ngx.remote  # realip's client
        if ngx.msec is not None and ngx.request_ms is not None:
            # nginx's clock as it logged the request, read then: $msec and $request_time
            ex.nginx_end = ngx.msec / 1000
            ex.nginx_ms = float(ngx.request_ms)
        if ngx.upstream is not None and len(ngx.upstream) == ngx.upstream_count:
            # nginx's own list of attempts (r->upstream_states): what it logs
            ex.upstream = attempts_from_states(ngx.upstream, ex.upstream)
            ex.upstream_via = "nginx" if ex.upstream else None
        elif ex.upstream and ex.upstream[-1].response_head is None and ngx.status in (499, 502, 504):
            # the last peer gave no answer: nginx's status says why it gave up on it (the
            # bytes cannot tell a timeout from a peer that closed): 504 timed out; the client
            # went away first: no status ("-"); 502 for a head nginx could not parse too
            ex.upstream[-1].status = {499: None, 502: 502, 504: 504}[ngx.status]
        # the request line as nginx understood it (None: not within the bytes it read, e.g.
        # HTTP/2's, or past REQLOG_LINE_CAP: the parsed one stays)
        if ngx.method is not None and ngx.uri is not None and ngx.protocol is not None:
            parsed = f"{ex.method} {ex.target} {ex.version}".strip()
            if not ngx.method and ex.method and not ex.error:
                ex.error = f"request line not accepted by nginx: {parsed}"
            ex.method, ex.target, ex.version = ngx.method, ngx.uri, ngx.protocol
        if not ex.request_body and not ex.method and ngx.request:
            ex.request_body = ngx.request  # what nginx logged as $request
        if ngx.bytes_sent == 0 and ex.error == _NO_RESPONSE:
            ex.error = _UNSENT.get(ngx.status, f"no response sent (nginx logged status {ngx.status})")
        elif ex.method and ngx.protocol == "" and ex.error and ex.error.startswith("malformed request"):
            ex.error = "HTTP/0.9 simple request (no headers, no status line)"
