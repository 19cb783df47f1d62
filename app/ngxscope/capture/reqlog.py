"""What nginx itself logged for a request (EV_REQ_LOG, struct ev_reqlog in bpf/events.h):
the constants and the per-upstream-state mirror of that record, the values it carries
(NginxLog, UpstreamState), and its pure-Python parser; capture.events parses the header and
hands the rest here (or to the compiled parser, which REQLOG_LAYOUT describes)."""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from .sockaddr import SOCKADDR_MAX, format_sockaddr

__all__ = [
    "LOCF_EXACT",
    "LOCF_NAMED",
    "LOCF_NONAME",
    "LOCF_NOREGEX",
    "LOCF_REGEX",
    "LOC_NAME_CAP",
    "REQLOGF_CLOCK",
    "REQLOGF_STATES",
    "REQLOGF_UNIX",
    "REQLOG_LAYOUT",
    "REQLOG_LINE_CAP",
    "REQLOG_UNIX_CAP",
    "UPSTATES_MAX",
    "UPSTATE_GROUP",
    "UPSTATE_PEER_CAP",
    "EvUpstate",
    "NginxLog",
    "UpstreamState",
    "location_label",
    "parse_reqlog",
]

REQLOG_LINE_CAP = 512
LOC_NAME_CAP = 96
LOCF_NONAME = 0x01
LOCF_NAMED = 0x04
LOCF_EXACT = 0x08
LOCF_NOREGEX = 0x10
LOCF_REGEX = 0x100
UPSTATES_MAX = 8
UPSTATE_PEER_CAP = 128
UPSTATE_GROUP = 0xFFFFFFFF
REQLOGF_CLOCK = 0x01
REQLOGF_STATES = 0x02
REQLOGF_UNIX = 0x04
REQLOG_UNIX_CAP = 112


class EvUpstate(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_uint32),
        ("peer_len", ctypes.c_uint32),
        ("response_ms", ctypes.c_int64),
        ("connect_ms", ctypes.c_int64),
        ("header_ms", ctypes.c_int64),
        ("peer", ctypes.c_uint8 * UPSTATE_PEER_CAP),
    ]


@dataclass(slots=True)
class UpstreamState:
    """One of nginx's r->upstream_states (struct ev_upstate), as its $upstream_* variables
    print it."""

    peer: str | None
    """$upstream_addr's entry: the peer's address, or the group's name when nginx found no
    live peer in it; None: no peer, where nginx went on to another group after an internal
    redirect (its lists write " : " there)."""
    status: int | None
    """$upstream_status (None: "-", no answer)."""
    response_ms: int | None
    """$upstream_response_time in ms (None: "-")."""
    connect_ms: int | None
    """$upstream_connect_time in ms (None: "-", never connected)."""
    header_ms: int | None
    """$upstream_header_time in ms (None: "-", no header read)."""


@dataclass(slots=True)
class NginxLog:
    """What nginx itself logs for a request, read from its request struct when it finished
    the request (EV_REQ_LOG): the truth the access log shows, where the bytes on the wire
    tell another story (444, 499, $request_length after large_client_header_buffers...)."""

    status: int
    """$status: r->err_status, else r->headers_out.status (0: none)."""
    request_length: int
    """$request_length."""
    bytes_sent: int
    """$bytes_sent (r->connection->sent)."""
    request: bytes
    """$request: the request line nginx stored, or what it read from the request's start
    (cut at CR/LF) when it rejected the line; at most REQLOG_LINE_CAP bytes."""
    method: str | None
    """$request_method (None: not within the bytes read, e.g. HTTP/2)."""
    uri: str | None
    """$request_uri (the target as sent; None: not within the bytes read)."""
    protocol: str | None
    """$server_protocol ("" for HTTP/0.9; None: not within the bytes read)."""
    location: str | None = None
    """The location nginx chose, as read from r->loc_conf, written as the window labels
    locations ("= /x", "^~ /x", "~ REGEX" for ~ and ~* alike, "@name", "/x"; "" at the
    server level; a name longer than LOC_NAME_CAP ends in "…"); None when not read."""
    remote: str = ""
    """$remote_addr:$remote_port as nginx logs them ("ip:port", IPv6 bracketed; "" unknown):
    the socket's peer, or the client the realip module took from X-Real-IP,
    X-Forwarded-For or a PROXY protocol header."""
    rid: int = 0
    """The request, as the low 32 bits of its address (0: unknown): upstream events with
    another `RawEvent.rid` on the same client connection served its subrequests
    (auth_request, SSI, slice...), whose attempts nginx leaves out of its $upstream_addr."""
    msec: int | None = None
    """$msec in whole milliseconds: nginx's clock as it logged the request (None: not read)."""
    request_ms: int | None = None
    """$request_time in milliseconds, as nginx computes it (None: not read)."""
    upstream: list[UpstreamState] | None = None
    """r->upstream_states in order, as nginx logs them (the first UPSTATES_MAX; [] for a
    request that went to no upstream); None when not read."""
    upstream_count: int = 0
    """How many states nginx had (more than `upstream` holds when over UPSTATES_MAX)."""
    server: str = ""
    """$server_addr of a unix listener, its whole path ("unix:/run/x.sock"); "" otherwise."""


_REQLOG_TAIL = struct.Struct(f"<qQQQQ14QQII{LOC_NAME_CAP}sI{SOCKADDR_MAX}sQQQQII")
_UPSTATE = struct.Struct(f"<IIqqq{UPSTATE_PEER_CAP}s")
assert _UPSTATE.size == ctypes.sizeof(EvUpstate)

REQLOG_LAYOUT = (UPSTATES_MAX, UPSTATE_PEER_CAP, UPSTATE_GROUP, REQLOGF_CLOCK, REQLOGF_STATES, REQLOGF_UNIX,
                 REQLOG_UNIX_CAP, REQLOG_LINE_CAP, LOC_NAME_CAP, LOCF_NAMED, LOCF_EXACT, LOCF_NOREGEX, LOCF_REGEX)
"""What the compiled parser must know of struct ev_reqlog, with _REQLOG_TAIL's and _UPSTATE's
formats, to parse EV_REQ_LOG records itself."""


def _ms_or_none(value: int) -> int | None:
    return None if value == -1 else max(value, 0)


def _upstream_states(buf: bytes | memoryview, at: int, count: int) -> list[UpstreamState]:
    out = []
    for i in range(count):
        status, peer_len, response, connect, header, name = _UPSTATE.unpack_from(buf, at + i * _UPSTATE.size)
        if peer_len == UPSTATE_GROUP:
            peer = None
        else:
            text = name[: min(peer_len, UPSTATE_PEER_CAP)].decode("utf-8", "backslashreplace")
            peer = text + "\u2026" if peer_len > UPSTATE_PEER_CAP else text
        out.append(UpstreamState(peer, status or None, _ms_or_none(response), _ms_or_none(connect),
                                 _ms_or_none(header)))
    return out


def _nginx_str(line: bytes, base: int, length: int, addr: int) -> str | None:
    """An ngx_str_t of nginx's (length, address) as text when its bytes are within `line`
    (read from address `base`); "" when nginx left it unset."""
    if not addr or not length:
        return ""
    off = addr - base
    if base == 0 or off < 0 or off + length > len(line):
        return None
    return line[off : off + length].decode("latin-1")


def _without_port_0(addr: str) -> str:
    """realip's client from X-Real-IP/X-Forwarded-For has no port: nginx logs $remote_port ""."""
    return addr[:-2] if addr.endswith(":0") else addr


def parse_reqlog(buf: bytes | memoryview, start: int) -> NginxLog:
    """The tail of an EV_REQ_LOG record (struct ev_reqlog after its header of `start` bytes)."""
    (request_length, sent, status, err_status, base, *strs, clcf, name_len, flags, name, remote_len, remote,
     now_sec, now_msec, start_sec, start_msec, rflags, nstates) = _REQLOG_TAIL.unpack_from(buf, start)
    held = min(nstates, UPSTATES_MAX) if rflags & REQLOGF_STATES else 0
    states_at = start + _REQLOG_TAIL.size
    at = states_at + held * _UPSTATE.size
    server = ""
    if rflags & REQLOGF_UNIX:
        path = bytes(buf[at + 2 : at + REQLOG_UNIX_CAP]).split(b"\0", 1)[0]
        server = "unix:" + path.decode("utf-8", "replace")
        at += REQLOG_UNIX_CAP
    raw = bytes(buf[at : at + REQLOG_LINE_CAP])
    line = raw[: strs[0]] if strs[0] and strs[1] == base else raw
    for stop in (b"\r", b"\n"):
        cut = line.find(stop)
        if cut >= 0:
            line = line[:cut]
    method = _nginx_str(raw, base, strs[10], strs[11])
    if method is None and base and strs[1] == base and strs[10] == 3:
        # method_name no longer points into the request line nginx read: nginx replaced it,
        # and the only replacement it makes is its "GET" constant (an error_page redirect of
        # a non-HEAD request: ngx_http_core_get_method), which $request_method then logs
        method = "GET"
    out = NginxLog(
        status=err_status or status,
        request_length=request_length,
        bytes_sent=sent,
        request=line,
        method=method,
        remote=_without_port_0(format_sockaddr(remote, remote_len)),
        uri=_nginx_str(raw, base, strs[8], strs[9]),
        protocol=_nginx_str(raw, base, strs[12], strs[13]),
        location=location_label(name[: min(name_len, LOC_NAME_CAP)], name_len, flags) if clcf else None,
    )
    if rflags & REQLOGF_CLOCK:
        out.msec = now_sec * 1000 + now_msec
        out.request_ms = max(0, out.msec - (start_sec * 1000 + start_msec))
    if rflags & REQLOGF_STATES:
        out.upstream = _upstream_states(buf, states_at, held)
        out.upstream_count = nstates
    out.server = server
    return out


def location_label(name: bytes, length: int, flags: int) -> str:
    """A location as nginx holds it (its name's bytes, whole length, LOCF_* bits) written
    the way the window labels locations (see NginxLog.location)."""
    text = name.decode("utf-8", "backslashreplace") + ("…" if length > len(name) else "")
    if not text or flags & LOCF_NAMED:
        return text
    if flags & LOCF_REGEX:
        return "~ " + text
    if flags & LOCF_EXACT:
        return "= " + text
    if flags & LOCF_NOREGEX:
        return "^~ " + text
    return text
