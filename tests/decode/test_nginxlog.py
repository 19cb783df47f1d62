"""decode.nginxlog: nginx's logged values replace the byte-derived ones only once proved right;
capture.reqlog.parse_reqlog: the EV_REQ_LOG record's request line and strings."""

from __future__ import annotations

import socket
import struct

from ngxscope.capture.events import EV_REQ_LOG, HEADER_SIZE, SOCKADDR_MAX, parse_event
from ngxscope.capture.reqlog import (
    LOC_NAME_CAP,
    LOCF_EXACT,
    LOCF_NAMED,
    REQLOG_UNIX_CAP,
    REQLOGF_CLOCK,
    REQLOGF_STATES,
    REQLOGF_UNIX,
    UPSTATE_GROUP,
    UPSTATE_PEER_CAP,
    NginxLog,
    UpstreamState,
)
from ngxscope.decode.nginxlog import NginxValues
from ngxscope.model import Exchange, UpstreamAttempt, nginx_list


def _log(status: int = 200, length: int = 80, sent: int = 150) -> NginxLog:
    return NginxLog(status=status, request_length=length, bytes_sent=sent, request=b"GET / HTTP/1.1",
                    method="GET", uri="/", protocol="HTTP/1.1")


def _ex() -> Exchange:
    ex = Exchange(id=1, start=0.0, end=0.0, pid=1, client="a", server="b", tls=False)
    ex.method, ex.target, ex.version, ex.status = "GET", "/", "HTTP/1.1", 200
    ex.request_bytes, ex.response_bytes = 70, 150
    return ex


def test_values_apply_after_agreeing() -> None:
    nv = NginxValues()
    ex = _ex()
    nv.apply(ex, _log(), 200, 150)
    assert (ex.status, ex.request_bytes, ex.response_bytes) == (200, 80, 150)
    assert nv.agreed == 1 and not nv.distrusted
    # a response nginx never sent: its status is nginx's
    ex = _ex()
    ex.status = None
    nv.apply(ex, _log(status=444, sent=0), None, None)
    assert (ex.status, ex.response_bytes) == (444, 0)


def test_disagreement_distrusts_for_good() -> None:
    """A wrong struct offset shows as a status or byte count the response bytes contradict."""
    nv = NginxValues()
    ex = _ex()
    nv.apply(ex, _log(status=512), 200, 150)
    assert nv.distrusted and (ex.status, ex.request_bytes) == (200, 70)
    ex = _ex()
    nv.apply(ex, _log(status=200), 200, 150)  # never again, even when they agree
    assert ex.request_bytes == 70


def test_implausible_values_distrust() -> None:
    nv = NginxValues()
    ex = _ex()
    nv.apply(ex, _log(status=70000), None, None)
    assert nv.distrusted and ex.status == 200


def test_rejected_line_takes_nginx_strings() -> None:
    nv = NginxValues()
    ex = _ex()
    ex.method, ex.target, ex.version, ex.error = "CONNECT", "example.com:443", "HTTP/1.1", None
    ngx = NginxLog(status=405, request_length=0, bytes_sent=300, request=b"CONNECT example.com:443 HTTP/1.1",
                   method="", uri="", protocol="")
    nv.apply(ex, ngx, None, None)
    assert (ex.method, ex.target, ex.version, ex.status) == ("", "", "", 405)
    assert ex.error and "CONNECT example.com:443" in ex.error
    # strings nginx holds outside the bytes it read (HTTP/2): the parsed ones stay
    ex = _ex()
    nv.apply(ex, NginxLog(200, 10, 150, b"", None, None, None), None, None)
    assert (ex.method, ex.target) == ("GET", "/")


def _record(line: bytes, base: int, strs: list[int], stored: bool, loc: tuple[int, bytes, int] = (0, b"", 0),
            clock: tuple[int, int, int, int] | None = None,
            states: list[tuple[int, bytes | None, int, int, int]] | None = None, nstates: int = -1,
            unix: bytes | None = None) -> bytes:
    head = struct.pack("<QQQQQIIiIIBBH", 1, 2, 3, 4, 0, 5, 6, 7, 0, 0, EV_REQ_LOG, 0, 1)
    assert len(head) == HEADER_SIZE
    if stored:
        strs = [len(line.split(b"\r")[0]), base, *strs[2:]]
    clcf, name, flags = loc
    peer = struct.pack("<HH4s", socket.AF_INET, socket.htons(8080), socket.inet_aton("192.0.2.9"))
    tail = struct.pack(f"<qQQQQ14QQII{LOC_NAME_CAP}sI{SOCKADDR_MAX}s", 77, 99, 200, 0, base, *strs, clcf, len(name),
                       flags, name, 16, peer)
    rflags = ((REQLOGF_CLOCK if clock else 0) | (REQLOGF_STATES if states is not None else 0)
              | (REQLOGF_UNIX if unix is not None else 0))
    tail += struct.pack("<QQQQII", *(clock or (0, 0, 0, 0)), rflags,
                        len(states or []) if nstates < 0 else nstates)
    for status, peer_name, response, connect, header in states or []:
        peer_len = UPSTATE_GROUP if peer_name is None else len(peer_name)
        tail += struct.pack(f"<IIqqq{UPSTATE_PEER_CAP}s", status, peer_len, response, connect, header,
                            (peer_name or b"")[:UPSTATE_PEER_CAP])
    if unix is not None:
        tail += struct.pack("<H", socket.AF_UNIX) + unix.ljust(REQLOG_UNIX_CAP - 2, b"\0")
    return head + tail + line


def test_parse_reqlog_strings_within_line() -> None:
    line = b"GET /a?b HTTP/1.1"
    base = 0x1000
    strs = [0, 0, 2, base + 4, 1, base + 7, 0, 0, 4, base + 4, 3, base, 8, base + 9]
    ev = parse_event(_record(line, base, strs, True), 0.0)
    assert ev.log is not None
    assert (ev.log.status, ev.log.request_length, ev.log.bytes_sent) == (200, 77, 99)
    assert (ev.log.method, ev.log.uri, ev.log.protocol, ev.log.request) == ("GET", "/a?b", "HTTP/1.1", line)
    assert ev.log.location is None  # no loc_conf read
    assert ev.log.remote == "192.0.2.9:8080"
    assert ev.log.rid == 6  # the record's rid slot names the request


def test_parse_reqlog_location() -> None:
    line = b"GET /a HTTP/1.1"
    for loc, want in [((0x7000, b"/api/", LOCF_EXACT), "= /api/"), ((0x7000, b"", 0), ""),
                      ((0x7000, b"@x", LOCF_NAMED), "@x")]:
        ev = parse_event(_record(line, 0x1000, [0] * 14, True, loc), 0.0)
        assert ev.log is not None and ev.log.location == want
    ex = _ex()
    NginxValues().apply(ex, NginxLog(200, 10, 150, b"", None, None, None, location="/api/"), None, None)
    assert (ex.location, ex.location_via) == ("/api/", "nginx")


def test_parse_reqlog_method_replaced_by_nginx() -> None:
    """error_page turned a POST into nginx's own "GET" (outside the line): $request_method GET."""
    line = b"POST /a HTTP/1.1"
    base = 0x1000
    strs = [0, 0, 2, base + 5, 0, 0, 0, 0, 2, base + 5, 3, 0x55550000, 8, base + 8]
    ev = parse_event(_record(line, base, strs, True), 0.0)
    assert ev.log is not None and ev.log.method == "GET" and ev.log.uri == "/a"


def test_remote_and_last_attempt_status_applied() -> None:
    nv = NginxValues()
    ex = _ex()
    ex.upstream = [UpstreamAttempt(addr="127.0.0.1:1", status=502)]
    nv.apply(ex, NginxLog(499, 10, 0, b"GET / HTTP/1.1", "GET", "/", "HTTP/1.1", remote="10.0.0.1"), None, None)
    assert ex.remote == "10.0.0.1" and ex.upstream[0].status is None  # the client went away: "-"
    ex = _ex()
    ex.upstream = [UpstreamAttempt(addr="127.0.0.1:1", status=502)]
    nv.apply(ex, NginxLog(504, 10, 0, b"GET / HTTP/1.1", "GET", "/", "HTTP/1.1", remote=ex.client), None, None)
    assert ex.remote is None and ex.upstream[0].status == 504


def test_parse_reqlog_rejected_line_cut_at_eol() -> None:
    """No request line stored: $request is what nginx read from the start, up to CR or LF."""
    raw = b"\x16\x03\x01\x00\x05hello\r\n\r\n"
    ev = parse_event(_record(raw, 0x2000, [0] * 14, False), 0.0)
    assert ev.log is not None
    assert ev.log.request == b"\x16\x03\x01\x00\x05hello"
    assert (ev.log.method, ev.log.uri, ev.log.protocol) == ("", "", "")


def test_unsent_statuses_in_nginx_words() -> None:
    nv = NginxValues()
    for status, words in ((444, "without a response"), (499, "client closed"), (400, "status 400")):
        ex = _ex()
        ex.status, ex.error = None, "no response bytes captured"
        nv.apply(ex, _log(status=status, sent=0), None, None)
        assert ex.status == status and ex.error is not None and words in ex.error


def test_http09_flag() -> None:
    nv = NginxValues()
    ex = _ex()
    ex.method, ex.error = "", "malformed request"
    nv.apply(ex, NginxLog(200, 13, 3, b"GET /simple", "GET", "/simple", ""), None, None)
    assert (ex.method, ex.target, ex.version) == ("GET", "/simple", "")
    assert ex.error is not None and "HTTP/0.9" in ex.error


def test_header_names_nginx_ignores_are_kept() -> None:
    from ngxscope.decode.http1 import parse_head

    parts, headers = parse_head(b"GET / HTTP/1.1\r\nHost: f\r\nmy_header: 1\r\nbad[name: 2")
    assert parts == ["GET", "/", "HTTP/1.1"]
    assert headers == [("Host", "f"), ("my_header", "1"), ("bad[name", "2")]


def test_parse_reqlog_clock_and_states() -> None:
    """nginx's clock as it logged the request, and its r->upstream_states: a peer that timed
    out, the next one, a group boundary (internal redirect), a group with no live peer, and a
    name longer than the bytes copied."""
    line = b"GET /a HTTP/1.1"
    long_name = b"unix:/" + b"x" * 200
    states = [(504, b"127.0.0.1:8081", 300, 0, -1), (200, b"127.0.0.1:8082", 5, 1, 4),
              (0, None, 0, 0, 0), (502, b"backends", 0, -1, -1), (200, long_name, 7, 0, 3)]
    ev = parse_event(_record(line, 0x1000, [0] * 14, True, clock=(1700000000, 250, 1699999999, 900),
                             states=states), 0.0)
    log = ev.log
    assert log is not None and log.request == line  # the line after the states
    assert (log.msec, log.request_ms) == (1700000000250, 350)
    assert log.upstream_count == 5 and log.upstream == [
        UpstreamState("127.0.0.1:8081", 504, 300, 0, None),
        UpstreamState("127.0.0.1:8082", 200, 5, 1, 4),
        UpstreamState(None, None, 0, 0, 0),
        UpstreamState("backends", 502, 0, None, None),
        UpstreamState("unix:/" + "x" * (UPSTATE_PEER_CAP - 6) + "\u2026", 200, 7, 0, 3),
    ]
    # neither read (another nginx version, or an older record): None, not "no attempt"
    ev = parse_event(_record(line, 0x1000, [0] * 14, True), 0.0)
    assert ev.log is not None and (ev.log.msec, ev.log.upstream) == (None, None) and ev.log.request == line
    # read, and the request went to no upstream
    ev = parse_event(_record(line, 0x1000, [0] * 14, True, states=[]), 0.0)
    assert ev.log is not None and ev.log.upstream == [] and ev.log.request == line


def test_states_make_the_attempts() -> None:
    """nginx's list wins: its names, statuses and times, " : " after a redirect; the wire
    attempts lend their heads and bytes where they are the same peer, and those nginx does
    not list (a resolver's TCP connection) are left out."""
    nv = NginxValues()
    ex = _ex()
    resolver = UpstreamAttempt(addr="127.0.0.1:53", status=502, request_bytes=30)
    first = UpstreamAttempt(addr="127.0.0.1:8081", status=502, request_bytes=40, response_head=None, start=10.0)
    second = UpstreamAttempt(addr="127.0.0.1:8082", status=404, request_bytes=41, response_head="HTTP/1.1 404")
    cut = UpstreamAttempt(addr="unix:/run/ngx\u2026", status=200, request_head="GET / HTTP/1.0")
    ex.upstream = [resolver, first, second, cut]
    states = [UpstreamState("127.0.0.1:8081", 504, 300, 0, None), UpstreamState("127.0.0.1:8082", 404, 2, 0, 1),
              UpstreamState(None, None, None, None, None), UpstreamState("unix:/run/ngx/app.sock", 200, 3, 0, 2),
              UpstreamState("backup", 502, 0, None, None)]
    log = NginxLog(200, 10, 150, b"", None, None, None, msec=1700000000250, request_ms=350, upstream=states,
                   upstream_count=5)
    nv.apply(ex, log, None, None)
    assert ex.upstream_via == "nginx" and (ex.nginx_end, ex.nginx_ms) == (1700000000.25, 350.0)
    got = [(a.addr, a.status, a.duration_ms, a.connect_ms, a.header_ms, a.redirected) for a in ex.upstream]
    assert got == [("127.0.0.1:8081", 504, 300.0, 0.0, None, False), ("127.0.0.1:8082", 404, 2.0, 0.0, 1.0, False),
                   ("unix:/run/ngx/app.sock", 200, 3.0, 0.0, 2.0, True), ("backup", 502, 0.0, None, None, False)]
    assert ex.upstream[0] is first and ex.upstream[1].response_head == "HTTP/1.1 404"
    assert ex.upstream[2].request_head == "GET / HTTP/1.0" and ex.upstream[3].request_bytes == 0
    # more states than the record holds: the wire's attempts stay (the fallback method)
    ex = _ex()
    ex.upstream = [UpstreamAttempt(addr="127.0.0.1:8081", status=200)]
    nv.apply(ex, NginxLog(200, 10, 150, b"", None, None, None, upstream=states[:1], upstream_count=9), None, None)
    assert ex.upstream_via is None and ex.upstream[0].status == 200


def test_nginx_list_joins_as_nginx_does() -> None:
    atts = [UpstreamAttempt(addr="a"), UpstreamAttempt(addr="b"), UpstreamAttempt(addr="c", redirected=True)]
    assert nginx_list(atts, ["a", "b", "c"]) == "a, b : c"
    assert nginx_list([], []) == ""


def test_unix_listener_path_whole() -> None:
    """A unix listener's $server_addr, whole: it replaces the path the first sighting cut."""
    line = b"GET /u HTTP/1.0"
    path = b"/tmp/" + b"d" * 60 + b"/http.sock"
    ev = parse_event(_record(line, 0x1000, [0] * 14, True, states=[(200, b"127.0.0.1:1", 1, 0, 1)], unix=path), 0.0)
    assert ev.log is not None and ev.log.server == "unix:" + path.decode() and ev.log.request == line
    assert ev.log.upstream is not None and len(ev.log.upstream) == 1
    ex = _ex()
    ex.server = "unix:/tmp/ddddd\u2026"
    NginxValues().apply(ex, ev.log, None, None)
    assert ex.server == "unix:" + path.decode()
