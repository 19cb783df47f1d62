"""Python mirror of bpf/events.h, and the decoded form of one ring-buffer record.

The ctypes structures must match the C header byte for byte, union members included;
tests/capture/test_events_layout.py compiles the header with the system C compiler and
compares sizes and offsets, and parses its #defines against the constants here (event
kinds, flags, counter indices, ring-buffer positions).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from types import ModuleType

from . import compiled

__all__ = [
    "AGG_STRUCTS",
    "CNT_MAX",
    "COUNTER_NAMES",
    "EVF_CLIENT",
    "EVF_H2STREAM",
    "EVF_NOMARK",
    "EVF_SAMPLED",
    "EVF_SHED",
    "EVF_STAGED",
    "EVF_TLS",
    "EVF_TRUNCATED",
    "EV_CLOSE",
    "EV_CONNECT",
    "EV_CONNECTED",
    "EV_COUNTED",
    "EV_EXIT",
    "EV_FORK",
    "EV_OPEN",
    "EV_RECV",
    "EV_REQ_DONE",
    "EV_REQ_LOG",
    "EV_SEND",
    "EV_SENDFILE",
    "EV_STREAM_DONE",
    "EV_STREAM_START",
    "EV_UPSTREAM",
    "KEEP_ABORTED",
    "KEEP_ALL",
    "KEEP_ERROR",
    "KEEP_MALFORMED",
    "KEEP_NAMES",
    "KEEP_SAMPLE",
    "KEEP_SHIFT",
    "KEEP_SLOW",
    "KEEP_UPSTREAM",
    "LINE_CAP",
    "LOCF_EXACT",
    "LOCF_NAMED",
    "LOCF_NONAME",
    "LOCF_NOREGEX",
    "LOCF_REGEX",
    "LOC_NAME_CAP",
    "RB_CONSUMED",
    "RB_PRODUCED",
    "REQLOGF_CLOCK",
    "REQLOGF_STATES",
    "REQLOGF_UNIX",
    "REQLOG_LINE_CAP",
    "REQLOG_UNIX_CAP",
    "SOCKADDR_MAX",
    "STAGE_CAP",
    "UPSTATES_MAX",
    "UPSTATE_GROUP",
    "UPSTATE_PEER_CAP",
    "AggKey",
    "AggVal",
    "EvDone",
    "EvHeader",
    "EvOpen",
    "EvReqLog",
    "EvUpstate",
    "HistKey",
    "NginxLog",
    "RawEvent",
    "UpstreamState",
    "format_sockaddr",
    "location_label",
    "nginx_msec",
    "parse_batch",
    "parse_batch_py",
    "parse_event",
]

EV_OPEN = 1
EV_RECV = 2
EV_SEND = 3
EV_SENDFILE = 4
EV_CLOSE = 5
EV_REQ_DONE = 6
EV_CONNECT = 7
EV_FORK = 8
EV_EXIT = 9
EV_UPSTREAM = 10
EV_STREAM_START = 11
EV_STREAM_DONE = 12
EV_CONNECTED = 13
EV_REQ_LOG = 14
EV_COUNTED = 15

EVF_TLS = 0x01
EVF_CLIENT = 0x02
EVF_TRUNCATED = 0x04
EVF_SHED = 0x08
EVF_H2STREAM = 0x10
EVF_NOMARK = 0x20
EVF_SAMPLED = 0x40
EVF_STAGED = 0x80
STAGE_CAP = 2048

KEEP_SAMPLE = 0x01
KEEP_ERROR = 0x02
KEEP_ABORTED = 0x04
KEEP_UPSTREAM = 0x08
KEEP_MALFORMED = 0x10
KEEP_SLOW = 0x20
KEEP_ALL = 0x40
KEEP_SHIFT = 16
KEEP_NAMES = {KEEP_SAMPLE: "sample", KEEP_ERROR: "error", KEEP_ABORTED: "aborted", KEEP_UPSTREAM: "upstream",
              KEEP_MALFORMED: "malformed", KEEP_SLOW: "slow", KEEP_ALL: "all"}
"""The kernel's keep rules (bits of a REQ_DONE's `keep`) by the name an exchange's kept_by uses."""

HIST_SUB_BITS = 7
HIST_SIZE = 4096
HIST_REQUEST = 0
HIST_UPSTREAM = 1

SOCKADDR_MAX = 28
LINE_CAP = 128
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

COUNTER_NAMES = ["events", "lost", "truncated", "args_full", "conns_full", "shed", "sampled"]
"""The kernel's per-CPU counters, by index: `CNT_<NAME>` in events.h."""
CNT_MAX = len(COUNTER_NAMES)

RB_PRODUCED = 0
"""rbstate index: bytes of ring-buffer records written (the programs add to it)."""
RB_CONSUMED = 1
"""rbstate index: the reader's consumer position (user space writes it)."""


class _OffsetSlot(ctypes.Union):
    """What ev_header's first 64-bit slot carries, by event kind (see events.h)."""

    _fields_ = [
        ("offset", ctypes.c_uint64),
        ("recvd", ctypes.c_uint64),
        ("ret", ctypes.c_uint64),
        ("sock_err", ctypes.c_uint64),
        ("parent", ctypes.c_uint64),
    ]


class _AuxSlot(ctypes.Union):
    """What ev_header's second 64-bit slot carries, by event kind."""

    _fields_ = [
        ("owner", ctypes.c_uint64),
        ("sent", ctypes.c_uint64),
        ("cptr", ctypes.c_uint64),
        ("req", ctypes.c_uint64),
        ("child", ctypes.c_uint64),
    ]


class _IdSlot(ctypes.Union):
    _fields_ = [("tid", ctypes.c_uint32), ("rid", ctypes.c_uint32), ("clock_span_us", ctypes.c_uint32)]


class _LenSlot(ctypes.Union):
    _fields_ = [("len", ctypes.c_uint32), ("status", ctypes.c_uint32)]


class _CapSlot(ctypes.Union):
    _fields_ = [("cap", ctypes.c_uint32), ("span_us", ctypes.c_uint32)]


class EvHeader(ctypes.Structure):
    _anonymous_ = ("_offset", "_aux", "_id", "_len", "_cap")
    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("conn_ts", ctypes.c_uint64),
        ("_offset", _OffsetSlot),
        ("_aux", _AuxSlot),
        ("clock", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("_id", _IdSlot),
        ("fd", ctypes.c_int32),
        ("_len", _LenSlot),
        ("_cap", _CapSlot),
        ("kind", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("seq", ctypes.c_uint16),
    ]


class EvOpen(ctypes.Structure):
    _fields_ = [
        ("h", EvHeader),
        ("peer", ctypes.c_uint8 * SOCKADDR_MAX),
        ("local", ctypes.c_uint8 * SOCKADDR_MAX),
        ("peer_len", ctypes.c_uint32),
        ("local_len", ctypes.c_uint32),
    ]


class EvDone(ctypes.Structure):
    _fields_ = [
        ("h", EvHeader),
        ("line", ctypes.c_uint8 * LINE_CAP),
    ]


class EvUpstate(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_uint32),
        ("peer_len", ctypes.c_uint32),
        ("response_ms", ctypes.c_int64),
        ("connect_ms", ctypes.c_int64),
        ("header_ms", ctypes.c_int64),
        ("peer", ctypes.c_uint8 * UPSTATE_PEER_CAP),
    ]


class EvReqLog(ctypes.Structure):
    _fields_ = [
        ("h", EvHeader),
        ("request_length", ctypes.c_int64),
        ("sent", ctypes.c_uint64),
        ("status", ctypes.c_uint64),
        ("err_status", ctypes.c_uint64),
        ("line_addr", ctypes.c_uint64),
        ("strs", ctypes.c_uint64 * 14),
        ("loc_conf", ctypes.c_uint64),
        ("loc_name_len", ctypes.c_uint32),
        ("loc_flags", ctypes.c_uint32),
        ("loc_name", ctypes.c_uint8 * LOC_NAME_CAP),
        ("remote_len", ctypes.c_uint32),
        ("remote", ctypes.c_uint8 * SOCKADDR_MAX),
        ("now_sec", ctypes.c_uint64),
        ("now_msec", ctypes.c_uint64),
        ("start_sec", ctypes.c_uint64),
        ("start_msec", ctypes.c_uint64),
        ("rflags", ctypes.c_uint32),
        ("nstates", ctypes.c_uint32),
        ("tail", ctypes.c_uint8 * (UPSTATES_MAX * ctypes.sizeof(EvUpstate) + REQLOG_UNIX_CAP + REQLOG_LINE_CAP)),
    ]


class AggKey(ctypes.Structure):
    """struct agg_key: one line of the kernel's per-second counts (bpf/completion.c)."""

    _fields_ = [("srv", ctypes.c_uint64), ("peer", ctypes.c_uint64), ("pid", ctypes.c_uint32),
                ("status", ctypes.c_uint16), ("epoch", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class AggVal(ctypes.Structure):
    _fields_ = [("n", ctypes.c_uint64), ("request_length", ctypes.c_uint64), ("bytes_sent", ctypes.c_uint64),
                ("upstream_tries", ctypes.c_uint64), ("upstream_failed", ctypes.c_uint64)]


class HistKey(ctypes.Structure):
    """struct hist_key: one histogram bucket of the kernel's per-second counts."""

    _fields_ = [("srv", ctypes.c_uint64), ("peer", ctypes.c_uint64), ("pid", ctypes.c_uint32),
                ("bucket", ctypes.c_uint16), ("cls", ctypes.c_uint8), ("which", ctypes.c_uint8),
                ("epoch", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 7)]


AGG_STRUCTS = {"agg_key": AggKey, "agg_val": AggVal, "hist_key": HistKey}
"""The C names of the aggregate maps' structs (checked against events.h by a test)."""

HEADER_SIZE = ctypes.sizeof(EvHeader)


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


@dataclass(slots=True)
class RawEvent:
    """One ring-buffer record, decoded, with kernel time already turned into Unix time."""

    kind: int
    """EV_* constant."""
    ts: float
    """Unix time of the event."""
    pid: int
    """Process (tgid) that made the call."""
    fd: int
    """Socket descriptor in that process (-1 when none)."""
    conn_ts: int
    """Connection identity: kernel ns of its first sighting; with pid and fd, unique."""
    offset: int
    """The header's first 64-bit slot: RECV/SEND/SENDFILE: stream offset of the first byte
    (`offset`); REQ_DONE/CLOSE/STREAM_*: bytes read so far (`recvd`); CONNECT: connect(2)'s
    result (`ret`); CONNECTED: the socket error (`sock_err`)."""
    aux: int
    """The second slot: upstream-side RECV/SEND/SENDFILE and CONNECT: the client connection
    served (`owner`); REQ_DONE/CLOSE/STREAM_DONE: bytes written so far (`sent`); OPEN: the
    connection's address (`cptr`); FORK: the child's pid (`child`)."""
    length: int
    """RECV/SEND/SENDFILE: bytes the call moved (`len`; other kinds: 0)."""
    flags: int
    """EVF_* bits."""
    clock: float = 0.0
    """nginx's cached clock at the event (Unix time of the worker's last epoll_wait return;
    0 when unknown): what nginx itself uses for $request_time and $msec."""
    seq: int = 0
    """REQ_DONE: requests finished on the connection so far (mod 2**16): reveals lost events."""
    data: bytes = b""
    """Captured payload (at most `length` bytes)."""
    peer: str = ""
    """OPEN/CONNECT: remote address "ip:port"."""
    local: str = ""
    """OPEN: local address "ip:port"."""
    status: int = 0
    """REQ_DONE: the response status the kernel read from its first bytes (0: unknown);
    STREAM_DONE: nginx's $status."""
    span: float = -1.0
    """REQ_DONE: seconds from the request's first byte read to the event (-1: unknown)."""
    clock_span: float = -1.0
    """REQ_DONE: the same span on nginx's cached clock (-1: unknown)."""
    rid: int = 0
    """The request (or stream session) the event concerns, as the low 32 bits of its address
    (0: none): upstream-side RECV/SEND/SENDFILE and CONNECT with an owner, UPSTREAM, HTTP/2
    REQ_DONE, STREAM_*. Tells apart the multiplexed HTTP/2 streams of one connection."""
    log: NginxLog | None = None
    """REQ_LOG (and the REQ_DONE it precedes, once the decoder paired them): nginx's own
    access-log values."""
    keep: int = 0
    """REQ_DONE (HTTP/1): the KEEP_* rules that made it a row while the capture samples (0:
    not sampling)."""

    @property
    def conn_key(self) -> tuple[int, int, int]:
        return (self.pid, self.fd, self.conn_ts)


_UNIX_PATHS: dict[str, str] = {}


def unix_path_with_prefix(prefix: str) -> str | None:
    """The one bound unix socket path (/proc/net/unix, this network namespace) that begins
    with `prefix`: a path longer than the sockaddr bytes the probes copy is completed so
    (a listener's own path, or the peer nginx connected to). None: none or several."""
    known = _UNIX_PATHS.get(prefix)
    if known is not None:
        return known
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    paths = {parts[7] for parts in (line.split(None, 7) for line in lines)
             if len(parts) == 8 and parts[7].startswith(prefix)}
    if len(paths) != 1:
        return None
    if len(_UNIX_PATHS) > 256:
        _UNIX_PATHS.clear()
    found = _UNIX_PATHS[prefix] = paths.pop()
    return found


def format_sockaddr(raw: bytes, length: int) -> str:
    """struct sockaddr_in / sockaddr_in6 bytes → "ip:port" / "[ip6]:port" ("" if unknown)."""
    import socket

    if length < 2 or len(raw) < 2:
        return ""
    family = int.from_bytes(raw[0:2], "little")
    if family == socket.AF_UNIX:
        # as nginx's $remote_addr/$server_addr: "unix:" for an unnamed peer, else its path;
        # a path longer than the bytes captured ends in "…" where it was cut
        path = raw[2:length].split(b"\0", 1)[0]
        text = path.decode("utf-8", "replace")
        if length > len(raw) and len(path) == len(raw) - 2:
            return "unix:" + (unix_path_with_prefix(text) or text + "…")
        return "unix:" + text
    if length < 8 or len(raw) < 8:
        return ""
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{port}"
    if family == socket.AF_INET6 and len(raw) >= 24:
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if addr.startswith("::ffff:") and "." in addr:
            return f"{addr[7:]}:{port}"
        return f"[{addr}]:{port}"
    return ""


_HEADER = struct.Struct("<QQQQQIIiIIBBH")
_OPEN_TAIL = struct.Struct(f"<{SOCKADDR_MAX}s{SOCKADDR_MAX}sII")
assert _HEADER.size == HEADER_SIZE and HEADER_SIZE + _OPEN_TAIL.size == ctypes.sizeof(EvOpen)
_REQLOG_TAIL = struct.Struct(f"<qQQQQ14QQII{LOC_NAME_CAP}sI{SOCKADDR_MAX}sQQQQII")
_REQLOG_LINE = HEADER_SIZE + _REQLOG_TAIL.size
_UPSTATE = struct.Struct(f"<IIqqq{UPSTATE_PEER_CAP}s")
assert _UPSTATE.size == ctypes.sizeof(EvUpstate)
assert ctypes.sizeof(EvReqLog) == _REQLOG_LINE + UPSTATES_MAX * _UPSTATE.size + REQLOG_UNIX_CAP + REQLOG_LINE_CAP


def _ms_or_none(value: int) -> int | None:
    return None if value == -1 else max(value, 0)


def _upstream_states(buf: bytes | memoryview, count: int) -> list[UpstreamState]:
    out = []
    for i in range(count):
        status, peer_len, response, connect, header, name = _UPSTATE.unpack_from(buf, _REQLOG_LINE + i * _UPSTATE.size)
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


def parse_reqlog(buf: bytes | memoryview) -> NginxLog:
    """The tail of an EV_REQ_LOG record."""
    (request_length, sent, status, err_status, base, *strs, clcf, name_len, flags, name, remote_len, remote,
     now_sec, now_msec, start_sec, start_msec, rflags, nstates) = _REQLOG_TAIL.unpack_from(buf, HEADER_SIZE)
    held = min(nstates, UPSTATES_MAX) if rflags & REQLOGF_STATES else 0
    at = _REQLOG_LINE + held * _UPSTATE.size
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
        out.upstream = _upstream_states(buf, held)
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


def nginx_msec(clock: float) -> int:
    """nginx's whole-millisecond count for a clock reading (nginx truncates). A clock read
    from nginx's own cache is a whole millisecond that went through float conversion: the
    microsecond added keeps it from landing just below its own value."""
    return int(clock * 1000 + 1e-3)


def parse_event(buf: bytes | memoryview, clock_offset: float) -> RawEvent:
    """Decode one ring-buffer record; `clock_offset` turns kernel monotonic ns into Unix time."""
    return parse_batch((buf,), clock_offset)[0]


def parse_batch_py(bufs: Iterable[bytes | memoryview], clock_offset: float) -> list[RawEvent]:
    """Decode many ring-buffer records at once (struct.unpack_from, no ctypes copies): the
    pure-Python reference of `parse_batch`."""
    unpack = _HEADER.unpack_from
    out: list[RawEvent] = []
    append = out.append
    for buf in bufs:
        # the five union slots of ev_header, named by their first member
        ts, conn_ts, offset, owner, clock, pid, tid, fd, length, cap, kind, flags, seq = unpack(buf, 0)
        if kind <= EV_SENDFILE and kind >= EV_RECV:   # offset, owner, rid, len, cap
            ev = RawEvent(kind, ts / 1e9 + clock_offset, pid, fd, conn_ts, offset, owner, length, flags,
                          clock / 1e9 + clock_offset if clock else 0.0, seq)
            if cap:
                ev.data = bytes(buf[HEADER_SIZE : HEADER_SIZE + cap])
            if owner:
                ev.rid = tid
        elif kind == EV_REQ_DONE:   # recvd, sent, then rid (HTTP/2) or the summary
            ev = RawEvent(kind, ts / 1e9 + clock_offset, pid, fd, conn_ts, offset, owner, 0, flags,
                          clock / 1e9 + clock_offset if clock else 0.0, seq)
            if flags & EVF_H2STREAM:
                ev.rid = tid
            else:
                ev.status = length & 0xFFFF   # status, and the keep rules above it
                ev.keep = length >> KEEP_SHIFT
                if cap:   # span_us
                    ev.span = (cap - 1) / 1e6
                if tid and clock:   # clock_span_us
                    ev.clock_span = (tid - 1) / 1e6
                if len(buf) > HEADER_SIZE:   # a shed exchange's summary: the request's first bytes
                    ev.data = bytes(buf[HEADER_SIZE : HEADER_SIZE + LINE_CAP])
        elif kind == EV_REQ_LOG:   # as its REQ_DONE's header, then struct ev_reqlog's tail
            ev = RawEvent(kind, ts / 1e9 + clock_offset, pid, fd, conn_ts, offset, owner, 0, flags,
                          clock / 1e9 + clock_offset if clock else 0.0, seq)
            if flags & EVF_H2STREAM:
                ev.rid = tid
            ev.log = parse_reqlog(buf)
            ev.log.rid = tid
        else:
            ev = RawEvent(kind, ts / 1e9 + clock_offset, pid, fd, conn_ts, offset, owner, 0, flags,
                          clock / 1e9 + clock_offset if clock else 0.0, seq)
            if kind in (EV_OPEN, EV_CONNECT):   # ret and owner (CONNECT), cptr (OPEN)
                peer, local, peer_len, local_len = _OPEN_TAIL.unpack_from(buf, HEADER_SIZE)
                ev.peer = format_sockaddr(peer, peer_len)
                ev.local = format_sockaddr(local, local_len)
                if kind == EV_CONNECT:
                    ev.rid = tid
            elif kind >= EV_UPSTREAM and kind < EV_CONNECTED:   # UPSTREAM, STREAM_*: rid
                ev.rid = tid
                if kind == EV_STREAM_DONE:
                    ev.status = length   # status
            elif kind == EV_COUNTED:   # recvd, sent, seq; len: how many completions
                ev.length = length
        append(ev)
    return out


def _parse_one_py(buf: bytes | memoryview, clock_offset: float) -> RawEvent:
    return parse_batch_py((buf,), clock_offset)[0]


_fast: ModuleType | None = None
if compiled.wanted():
    try:
        from . import _fastevents as _fast
    except ImportError:  # not built: the reference does the work
        _fast = None
if _fast is not None:
    try:
        # RawEvent fields the C parser does not know (added since) get their default
        _known = {"kind", "ts", "pid", "fd", "conn_ts", "offset", "aux", "length", "flags", "clock", "seq",
                  "data", "peer", "local", "status", "span", "clock_span", "rid", "log", "keep"}
        _extra = {f.name: f.default for f in fields(RawEvent) if f.name not in _known}
        if MISSING in _extra.values():
            raise TypeError("a RawEvent field without a plain default")
        _fast.prepare(RawEvent, NginxLog, _extra)
    except TypeError:  # such a field, or NginxLog changed: the reference parses
        _fast = None

REQLOG_LAYOUT = (UPSTATES_MAX, UPSTATE_PEER_CAP, UPSTATE_GROUP, REQLOGF_CLOCK, REQLOGF_STATES, REQLOGF_UNIX,
                 REQLOG_UNIX_CAP, REQLOG_LINE_CAP, LOC_NAME_CAP, LOCF_NAMED, LOCF_EXACT, LOCF_NOREGEX, LOCF_REGEX)
"""What the compiled parser must know of struct ev_reqlog, with _REQLOG_TAIL's and _UPSTATE's
formats, to parse EV_REQ_LOG records itself."""
fast_reqlog = False
"""Whether the compiled parser parses EV_REQ_LOG records (else it hands them to the reference:
struct ev_reqlog or NginxLog changed since _fastevents.c was written)."""
if _fast is not None:
    try:
        _fast.prepare_reqlog(NginxLog, UpstreamState, _REQLOG_TAIL.format, _UPSTATE.format, REQLOG_LAYOUT)
        fast_reqlog = True
    except TypeError:  # another layout: the reference parses these records
        pass


def parse_batch(bufs: Iterable[bytes | memoryview], clock_offset: float) -> list[RawEvent]:
    """Decode many ring-buffer records at once: the compiled parser when built (records of a
    kind it does not know it hands to the reference), else
    `parse_batch_py`. Both give equal RawEvents and raise struct.error on a short record."""
    if _fast is None:
        return parse_batch_py(bufs, clock_offset)
    return _fast.parse_batch(bufs if isinstance(bufs, list | tuple) else list(bufs), clock_offset, _parse_one_py)
