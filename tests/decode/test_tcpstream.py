"""Stream-module (TCP proxy) sessions and per-request upstream attribution, from synthetic
events in capture order: HTTP-looking payload stays a TCP session; HTTP/2 streams of one
connection get the attempts of their own request (rid)."""

from __future__ import annotations

import errno

from ngxscope.capture.events import (
    EV_CLOSE,
    EV_CONNECT,
    EV_CONNECTED,
    EV_OPEN,
    EV_RECV,
    EV_SEND,
    EV_STREAM_DONE,
    EV_STREAM_START,
    EVF_CLIENT,
    RawEvent,
)
from ngxscope.decode.assembler import Assembler
from ngxscope.decode.upstream import UpstreamTracker
from ngxscope.model import Exchange

PID, CONN, UP = 100, 1000, 2000
T0 = 1_700_000_000.0


def ev(kind: int, t: float, fd: int, conn_ts: int, **kw: object) -> RawEvent:
    e = RawEvent(kind, T0 + t, PID, fd, conn_ts, 0, 0, 0, 0, clock=T0 + t)
    for k, v in kw.items():
        setattr(e, k, v)
    return e


def test_tcp_session_with_http_looking_payload_is_one_tcp_record() -> None:
    out: list[Exchange] = []
    asm = Assembler(out.append)
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    events = [
        ev(EV_OPEN, 0.0, 5, CONN, flags=EVF_CLIENT, peer="127.0.0.1:5000", local="127.0.0.1:9000"),
        ev(EV_STREAM_START, 0.0, 5, CONN, flags=EVF_CLIENT, rid=77),
        ev(EV_CONNECT, 0.0, 6, 0, peer="127.0.0.1:1", aux=CONN, rid=77,
           offset=(-errno.ECONNREFUSED) & (2**64 - 1)),
        ev(EV_CONNECT, 0.0, 6, 0, peer="127.0.0.1:2", aux=CONN, rid=77,
           offset=(-errno.EINPROGRESS) & (2**64 - 1)),
        ev(EV_CONNECTED, 0.002, 6, 0),
        ev(EV_OPEN, 0.003, 6, UP, peer="127.0.0.1:2"),
        ev(EV_RECV, 0.003, 5, CONN, flags=EVF_CLIENT, length=len(req), data=req),
        ev(EV_SEND, 0.003, 6, UP, length=len(req), aux=CONN, rid=77),
        ev(EV_RECV, 0.005, 6, UP, length=len(req), aux=CONN, rid=77, data=req),
        ev(EV_SEND, 0.005, 5, CONN, flags=EVF_CLIENT, length=len(req), data=req),
        ev(EV_CLOSE, 0.007, 6, UP),
        ev(EV_STREAM_DONE, 0.007, 5, CONN, flags=EVF_CLIENT, offset=len(req), aux=len(req),
           status=200, rid=77),
        ev(EV_CLOSE, 0.007, 5, CONN, flags=EVF_CLIENT, offset=len(req), aux=len(req)),
    ]
    for e in events:
        asm.feed(e)
    assert len(out) == 1
    x = out[0]
    assert x.is_tcp and (x.method, x.status, x.error) == ("TCP", 200, None)
    assert (x.request_bytes, x.response_bytes) == (len(req), len(req))
    assert x.request_body == req and x.response_body == req and not x.request_headers
    assert [a.addr for a in x.upstream] == ["127.0.0.1:1", "127.0.0.1:2"]
    failed, ok = x.upstream
    assert failed.connect_ms is None and failed.duration_ms == 0.0 and failed.request_bytes == 0
    assert (ok.connect_ms, ok.header_ms, ok.duration_ms) == (2.0, 5.0, 7.0)
    assert (ok.request_bytes, ok.response_bytes, ok.status) == (len(req), len(req), None)
    assert x.nginx_ms == 7.0


def test_attempts_are_handed_to_their_own_request() -> None:
    tr = UpstreamTracker()
    for fd, up, rid in ((7, UP, 11), (8, UP + 1, 22)):
        tr.on_connect(ev(EV_CONNECT, 0.0, fd, 0, peer=f"127.0.0.1:{fd}", aux=CONN, rid=rid))
        tr.on_open(ev(EV_OPEN, 0.001, fd, up), "")
    # interleaved, as multiplexed HTTP/2 streams are proxied
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    for fd, up, rid in ((7, UP, 11), (8, UP + 1, 22), (8, UP + 1, 22), (7, UP, 11)):
        tr.on_data(ev(EV_SEND, 0.002, fd, up, length=10, aux=CONN, rid=rid, data=b"GET / HTTP/1.1\r\n\r\n"),
                   sending=True)
    for fd, up, rid in ((8, UP + 1, 22), (7, UP, 11)):
        tr.on_data(ev(EV_RECV, 0.004, fd, up, length=len(resp), aux=CONN, rid=rid, data=resp),
                   sending=False)
    second = tr.take(PID, CONN, 22)
    first = tr.take(PID, CONN, 11)
    assert [(a.addr, a.request_bytes) for a in second] == [("127.0.0.1:8", 20)]
    assert [(a.addr, a.request_bytes) for a in first] == [("127.0.0.1:7", 20)]
    assert tr.take(PID, CONN) == []


def test_subrequest_and_udp_sockets_kept_out_of_the_requests_attempts() -> None:
    """take_request: the request's own attempts ($upstream_addr), its subrequests' apart; a
    socket connected at once that never carried the request (a resolver's UDP socket opened
    while the worker served it) is no attempt at all."""
    tr = UpstreamTracker()
    resp = b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"  # bare LF: nginx takes it
    tr.on_connect(ev(EV_CONNECT, 0.0, 5, 0, peer="127.0.0.1:53", aux=CONN, rid=11, offset=0))  # UDP: ret 0
    for fd, up, rid in ((7, UP, 33), (8, UP + 1, 11)):  # 33: the auth subrequest, 11: the request
        tr.on_connect(ev(EV_CONNECT, 0.001, fd, 0, peer=f"127.0.0.1:{fd}", aux=CONN, rid=rid,
                         offset=(1 << 64) - 115))  # -EINPROGRESS
        tr.on_open(ev(EV_OPEN, 0.001, fd, up), "")
        tr.on_data(ev(EV_SEND, 0.002, fd, up, length=18, aux=CONN, rid=rid, data=b"GET / HTTP/1.1\r\n\r\n"),
                   sending=True)
        tr.on_data(ev(EV_RECV, 0.003, fd, up, length=len(resp), aux=CONN, rid=rid, data=resp), sending=False)
    own, sub = tr.take_request(PID, CONN, 11)
    assert [(a.addr, a.status) for a in own] == [("127.0.0.1:8", 200)]
    assert [(a.addr, a.status) for a in sub] == [("127.0.0.1:7", 200)]
