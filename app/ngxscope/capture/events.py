"""Python mirror of bpf/events.h, and the decoded form of one ring-buffer record.

The ctypes structures must match the C header byte for byte, union members included;
tests/capture/test_events_layout.py compiles the header with the system C compiler and
compares sizes and offsets, and parses its #defines against the constants here (event
kinds, flags, counter indices, ring-buffer positions). The EV_REQ_LOG record's own part
(nginx's logged values and their parser) is capture.reqlog's; addresses, capture.sockaddr's.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from types import ModuleType

from . import compiled
from .reqlog import (
    _REQLOG_TAIL,
    _UPSTATE,
    LOC_NAME_CAP,
    REQLOG_LAYOUT,
    REQLOG_LINE_CAP,
    REQLOG_UNIX_CAP,
    UPSTATES_MAX,
    EvUpstate,
    NginxLog,
    UpstreamState,
    parse_reqlog,
)
from .sockaddr import SOCKADDR_MAX, format_sockaddr

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
    "RB_CONSUMED",
    "RB_PRODUCED",
    "SOCKADDR_MAX",
    "STAGE_CAP",
    "AggKey",
    "AggVal",
    "EvDone",
    "EvHeader",
    "EvOpen",
    "EvReqLog",
    "HistKey",
    "RawEvent",
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

LINE_CAP = 128

COUNTER_NAMES = ["events", "lost", "truncated", "args_full", "conns_full", "shed", "sampled",
                 "tls_retries"]
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


_HEADER = struct.Struct("<QQQQQIIiIIBBH")
_OPEN_TAIL = struct.Struct(f"<{SOCKADDR_MAX}s{SOCKADDR_MAX}sII")
assert _HEADER.size == HEADER_SIZE and HEADER_SIZE + _OPEN_TAIL.size == ctypes.sizeof(EvOpen)
assert ctypes.sizeof(EvReqLog) == (HEADER_SIZE + _REQLOG_TAIL.size + UPSTATES_MAX * _UPSTATE.size + REQLOG_UNIX_CAP
                                   + REQLOG_LINE_CAP)


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
            ev.log = parse_reqlog(buf, HEADER_SIZE)
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
