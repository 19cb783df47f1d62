"""Upstream attempts: nginx's own connections to its backends, tied to client requests.

The capture tells, for every byte nginx moves on an upstream connection, which client
connection's request it serves (BPF reads `c->data`, the request, then `r->connection`),
and for every connect(2) which request made it and whether it failed at once. So attempts
are assigned by data flow, never by timing, and retries (`proxy_next_upstream`) show up as
one attempt per connect. Times are computed on nginx's cached clock exactly as nginx
computes `$upstream_connect_time`, `$upstream_header_time` and `$upstream_response_time`.

Each event also names the request it serves (`RawEvent.rid`), so the attempts of HTTP/2
streams multiplexed on one client connection are handed to the right stream. Attempts of a
stream-module session (TCP proxy, `mark_raw`) are opaque bytes: no HTTP parsing; their
times are `$upstream_connect_time`, `$upstream_first_byte_time`, `$upstream_session_time`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ..capture.events import RawEvent, nginx_msec
from ..model import UpstreamAttempt
from .cgihead import non_http_status
from .http1 import HeadError, find_head_end, parse_head

__all__ = ["UpstreamTracker"]

HEAD_LIMIT = 16 * 1024
"""Bytes of request/response head kept per attempt."""

_EINPROGRESS = -errno.EINPROGRESS


_ms = nginx_msec


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(slots=True)
class _Attempt:
    out: UpstreamAttempt
    client: tuple[int, int]
    """(pid, conn_ts) of the client connection whose request this attempt serves."""
    start_clock: float
    sent_any: bool = False
    received_any: bool = False
    head_done: bool = False
    req_head: bytearray = field(default_factory=bytearray)
    resp_head: bytearray = field(default_factory=bytearray)
    failed: str | None = None
    last_clock: float = 0.0
    tunnel: bool = False
    """The peer answered 101 (a WebSocket upgrade): what follows is relayed, not HTTP."""
    rid: int = 0
    """The request it serves (`RawEvent.rid`; 0: unknown)."""
    raw: bool = False
    """For a TCP proxy session (stream module): bytes are counted, never parsed."""
    instant: bool = False
    """connect(2) returned 0 at once (a UDP socket does; nginx sends a request on a TCP one
    in the same turn)."""


@dataclass(slots=True)
class _UpConn:
    peer: str
    current: _Attempt | None = None
    uses: int = 0


class UpstreamTracker:
    """Builds UpstreamAttempts from upstream-side events; hands them out per client request."""

    def __init__(self) -> None:
        self.pending: dict[tuple[int, int], _Attempt] = {}
        self._conns: dict[tuple[int, int, int], _UpConn] = {}
        self._by_client: dict[tuple[int, int], list[_Attempt]] = {}
        self._raw: set[tuple[int, int]] = set()

    def mark_raw(self, pid: int, conn_ts: int) -> None:
        """The client connection (pid, conn_ts) is a TCP proxy session: its attempts are raw."""
        self._raw.add((pid, conn_ts))

    # -- events ----------------------------------------------------------------------------
    def on_connect(self, ev: RawEvent) -> None:
        if not ev.aux:
            return  # not for an HTTP request we know (a resolver, a mail proxy...)
        client = (ev.pid, ev.aux)
        att = _Attempt(UpstreamAttempt(addr=ev.peer, start=ev.ts), client, start_clock=ev.clock or ev.ts,
                       rid=ev.rid, raw=client in self._raw)
        ret = _signed(ev.offset)
        if ret not in (0, _EINPROGRESS):
            att.failed = f"connect failed: {errno.errorcode.get(-ret, str(ret))}"
        elif ret == 0:
            att.instant = True
            if att.raw:
                att.out.connect_ms = 0.0  # connected at once: nginx goes on in the same turn
        self._by_client.setdefault(client, []).append(att)
        self.pending[(ev.pid, ev.fd)] = att

    def on_connected(self, ev: RawEvent) -> None:
        """nginx asked how a non-blocking connect ended (getsockopt SO_ERROR): the stream
        proxy's `$upstream_connect_time` is taken now; an error fails the attempt."""
        att = self.pending.get((ev.pid, ev.fd))
        if att is None:
            return
        err = _signed(ev.offset)
        if err:
            att.failed = f"connect failed: {errno.errorcode.get(err, str(err))}"
        elif att.raw and att.out.connect_ms is None:
            att.out.connect_ms = float(_ms(ev.clock or ev.ts) - _ms(att.start_clock))

    def on_open(self, ev: RawEvent, peer: str) -> None:
        att = self.pending.pop((ev.pid, ev.fd), None)
        conn = _UpConn(peer=att.out.addr if att else peer)
        if att is not None:
            conn.current = att
        self._conns[ev.conn_key] = conn

    def on_close(self, key: tuple[int, int, int]) -> None:
        self._conns.pop(key, None)

    def closing(self, ev: RawEvent) -> None:
        """nginx closes an upstream connection: a raw attempt ends here ($upstream_session_time;
        a peer that sent nothing had its first "byte", the end of stream, now too). An HTTP
        attempt still in progress ends here too: nginx lets go of the peer when its answer
        ended, it timed out, the client went away or a tunnel closed ($upstream_response_time)."""
        conn = self._conns.get(ev.conn_key)
        att = conn.current if conn is not None else None
        if att is None:
            return
        out = att.out
        if not att.raw:
            out.duration_ms = float(max(out.duration_ms or 0.0, _ms(ev.clock or ev.ts) - _ms(att.start_clock)))
            return
        out.duration_ms = float(_ms(ev.clock or ev.ts) - _ms(att.start_clock))
        if out.header_ms is None and out.connect_ms is not None:
            out.header_ms = out.duration_ms

    def on_data(self, ev: RawEvent, sending: bool) -> None:
        conn = self._conns.get(ev.conn_key)
        if conn is None:
            conn = self._conns[ev.conn_key] = _UpConn(peer="")
        if not ev.aux:
            return
        client = (ev.pid, ev.aux)
        att = conn.current
        if att is not None and att.tunnel:
            return  # relayed WebSocket bytes: the client side summarises them
        if (att is None or att.client != client or (ev.rid and att.rid and ev.rid != att.rid)
                or (sending and att.received_any and not att.raw)):
            # a new request on this connection: a keepalive reuse (no connect of its own)
            att = _Attempt(
                UpstreamAttempt(addr=conn.peer, start=ev.ts, reused=True, connect_ms=0.0),
                client,
                start_clock=ev.clock or ev.ts,
                rid=ev.rid,
                raw=client in self._raw,
            )
            self._by_client.setdefault(client, []).append(att)
            conn.current = att
        clock = ev.clock or ev.ts
        att.last_clock = clock
        out = att.out
        if att.raw:
            self._raw_data(att, clock, ev.length, sending)
        elif sending:
            if not att.sent_any:
                att.sent_any = True
                if out.connect_ms is None:
                    out.connect_ms = float(_ms(clock) - _ms(att.start_clock))
            out.request_bytes += ev.length
            if len(att.req_head) < HEAD_LIMIT and b"\r\n\r\n" not in att.req_head:
                att.req_head += ev.data[: HEAD_LIMIT - len(att.req_head)]
        else:
            att.received_any = True
            out.response_bytes += ev.length
            if not att.head_done:
                att.resp_head += ev.data[: HEAD_LIMIT - len(att.resp_head)]
                self._try_head(att, clock)
            out.duration_ms = float(_ms(clock) - _ms(att.start_clock))

    @staticmethod
    def _raw_data(att: _Attempt, clock: float, length: int, sending: bool) -> None:
        """TCP proxy bytes: the first byte either way means connected; the first byte read is
        `$upstream_first_byte_time`."""
        out = att.out
        if out.connect_ms is None:
            out.connect_ms = float(_ms(clock) - _ms(att.start_clock))
        if sending:
            att.sent_any = True
            out.request_bytes += length
        else:
            if not att.received_any:
                out.header_ms = float(_ms(clock) - _ms(att.start_clock))
            att.received_any = True
            out.response_bytes += length

    def _try_head(self, att: _Attempt, clock: float) -> None:
        buf = bytes(att.resp_head)
        other = non_http_status(bytes(att.req_head), buf)
        if other is not None:  # FastCGI, SCGI, uwsgi, memcached, HTTP/0.9: no status line
            att.head_done = True
            att.out.status, att.out.response_head = other
            att.out.header_ms = float(_ms(clock) - _ms(att.start_clock))
            return
        pos = 0
        while True:
            # nginx takes a bare LF as a line end in an upstream's head too
            past = find_head_end(buf, pos)
            if past < 0:
                return
            head = buf[pos:past].rstrip(b"\r\n")
            try:
                parts, _headers = parse_head(head)
                status = int(parts[1])
            except (HeadError, ValueError, IndexError):
                att.head_done = True
                att.failed = "malformed upstream response"
                return
            if 100 <= status < 200 and status != 101:
                pos = past
                continue
            att.head_done = True
            att.tunnel = status == 101
            att.out.status = status
            att.out.header_ms = float(_ms(clock) - _ms(att.start_clock))
            att.out.response_head = head.decode("latin-1")
            return

    # -- hand-out --------------------------------------------------------------------------
    def take(self, pid: int, conn_ts: int, rid: int = 0) -> list[UpstreamAttempt]:
        """The attempts of the client request that just finished on (pid, conn_ts): all of
        them, or with `rid` (an HTTP/2 stream) those of that request only."""
        atts = self._by_client.pop((pid, conn_ts), [])
        if rid:
            rest = [a for a in atts if a.rid != rid]
            atts = [a for a in atts if a.rid == rid]
            if rest:
                self._by_client[(pid, conn_ts)] = rest
        return self._hand_out(atts)

    def take_request(self, pid: int, conn_ts: int, request: int) -> tuple[list[UpstreamAttempt],
                                                                         list[UpstreamAttempt]]:
        """Every attempt made for the HTTP/1 request that just finished on (pid, conn_ts),
        split into the request's own (what nginx logs as $upstream_addr) and those of its
        subrequests (auth_request, SSI, slice...: another `rid`), which nginx logs nowhere in
        the main request's line. `request`: its rid (0: unknown, all are its own)."""
        atts = self._by_client.pop((pid, conn_ts), None)
        if not atts:
            return [], []   # most requests: no upstream (the lists are the callers' own)
        own = [a for a in atts if not request or not a.rid or a.rid == request]
        sub = [a for a in atts if request and a.rid and a.rid != request]
        return self._hand_out(own), self._hand_out(sub)

    def _hand_out(self, atts: list[_Attempt]) -> list[UpstreamAttempt]:
        # a socket connected at once that never carried a byte of the request: a resolver's or
        # syslog's UDP socket opened while the worker served it, not a peer ($upstream_addr)
        atts = [a for a in atts if a.raw or not a.instant or a.sent_any or a.received_any]
        out = []
        for i, att in enumerate(atts):
            a = att.out
            if att.req_head:
                head = bytes(att.req_head)
                end = head.find(b"\r\n\r\n")
                a.request_head = (head[:end] if end >= 0 else head).decode("latin-1")
            if att.raw:
                if a.duration_ms is None:
                    # $upstream_session_time of a peer never connected: until nginx moved on
                    until = atts[i + 1].start_clock if i + 1 < len(atts) else (att.last_clock or att.start_clock)
                    a.duration_ms = float(max(0, _ms(until) - _ms(att.start_clock)))
            elif att.failed or not att.received_any:
                # nginx logs a peer it could not get a response from as 502 in $upstream_status
                if a.status is None:
                    a.status = 502
                if a.duration_ms is None:
                    # nginx closes the attempt when it moves on: the next attempt's start
                    until = atts[i + 1].start_clock if i + 1 < len(atts) else (att.last_clock or att.start_clock)
                    a.duration_ms = float(max(0, _ms(until) - _ms(att.start_clock)))
            out.append(a)
            for conn in self._conns.values():
                if conn.current is att and not att.tunnel:
                    conn.current = None
        return out

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Open upstream connections per peer: "active" (serving a request) and "idle" (pooled)."""
        out: dict[str, dict[str, int]] = {}
        for conn in list(self._conns.values()):  # a copy: called from another thread
            if not conn.peer:
                continue
            slot = out.setdefault(conn.peer, {"active": 0, "idle": 0})
            slot["active" if conn.current is not None else "idle"] += 1
        return out

    def drop_client(self, pid: int, conn_ts: int) -> None:
        self._by_client.pop((pid, conn_ts), None)
        self._raw.discard((pid, conn_ts))
