"""Ring-buffer records of a real capture, kept as a test sample, and a record builder.

capture/samples/ring-records.bin.gz: 1,500 records `bench/decoder.py --record` captured from the lab
nginx (the end of the plain run: the lab's traffic mix with upstreams, request bodies,
chunked and pipelined requests; the start of the TLS run), each a 4-byte little-endian
length then the record. Payloads over 1 KiB were cut to 1 KiB (their `cap` lowered to
match, as a smaller payload cap would), to keep the file small. Its EV_REQ_LOG records were
recorded before struct ev_reqlog gained the location (loc_conf, loc_name_len, loc_flags,
loc_name) and realip's client (remote_len, remote): those 144 bytes were inserted as zeros
before `line` (no location read, no client), which is what the kernel writes when it reads
neither. Then struct ev_reqlog gained nginx's clock and upstream states (now_sec, now_msec,
start_sec, start_msec, rflags, nstates: 40 bytes) before its `tail`: inserted as zeros too
(rflags 0: neither read, so no state precedes the line in `tail`).

capture/samples/reqlog-records.bin.gz: 182 EV_REQ_LOG records of struct ev_reqlog as it is
now (nginx's clock and r->upstream_states read), from the same kind of run: every one that
went upstream (1 or 2 attempts: /api/, /fail/, /flaky/, /slow/), one per other location and
status, every 1000th of the rest (plain and TLS).

`reqlog_record` builds EV_REQ_LOG records field by field, `reqlog_fields` draws them
(hypothesis): upstream states (group boundaries, peers cut or long, more than UPSTATES_MAX),
locations, realip clients, unix listeners, request lines with their ngx_str_t addresses.
"""

from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ngxscope.capture import events as E
from ngxscope.capture import reqlog as R

__all__ = ["REQLOG_SAMPLE", "load_sample", "record", "reqlog_fields", "reqlog_record", "request_strs", "sockaddr"]

SAMPLE = Path(__file__).parent / "capture" / "samples" / "ring-records.bin.gz"
REQLOG_SAMPLE = Path(__file__).parent / "capture" / "samples" / "reqlog-records.bin.gz"
_LEN = struct.Struct("<I")


def load_sample(path: Path = SAMPLE) -> list[bytes]:
    data = gzip.decompress(path.read_bytes())
    out, pos = [], 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def sockaddr(addr: str) -> bytes:
    """"ip:port" / "[ip6]:port" -> the 28 bytes of a struct sockaddr_in / sockaddr_in6."""
    host, port = addr.rsplit(":", 1)
    if host.startswith("["):
        raw = struct.pack("<H", socket.AF_INET6) + struct.pack(">H", int(port)) + bytes(4)
        raw += socket.inet_pton(socket.AF_INET6, host[1:-1])
    else:
        raw = struct.pack("<H", socket.AF_INET) + struct.pack(">H", int(port)) + socket.inet_aton(host)
    return raw.ljust(E.SOCKADDR_MAX, b"\0")


def record(ev: E.RawEvent) -> bytes:
    """The ring-buffer record the kernel would write for `ev` (clock offset 0)."""
    kind = ev.kind
    ts = round(ev.ts * 1e9)
    clock = round(ev.clock * 1e9) if ev.clock else 0
    stream_bytes = kind in (E.EV_RECV, E.EV_SEND, E.EV_SENDFILE)
    length = ev.length if stream_bytes else ev.status
    if kind == E.EV_REQ_DONE:
        cap = round(ev.span * 1e6) + 1 if ev.span >= 0 else 0
        tid = round(ev.clock_span * 1e6) + 1 if ev.clock_span >= 0 else ev.rid
    else:
        cap = len(ev.data) if stream_bytes else 0
        tid = ev.rid
    head = E._HEADER.pack(ts, ev.conn_ts, ev.offset, ev.aux, clock, ev.pid, tid, ev.fd, length, cap,
                          kind, ev.flags, ev.seq)
    if kind in (E.EV_OPEN, E.EV_CONNECT):
        peer = sockaddr(ev.peer) if ev.peer else bytes(E.SOCKADDR_MAX)
        local = sockaddr(ev.local) if ev.local else bytes(E.SOCKADDR_MAX)
        return head + E._OPEN_TAIL.pack(peer, local, 16 if ev.peer else 0, 16 if ev.local else 0)
    if stream_bytes or (kind == E.EV_REQ_DONE and ev.data):
        return head + ev.data
    return head


def request_strs(line: bytes, base: int) -> list[int]:
    """The 14 words of ngx_str_t's (len, data) nginx holds for a request line read at `base`:
    request_line, uri, args, exten, unparsed_uri, method_name, http_protocol (0, 0: unset)."""
    end = min(i for i in (line.find(b"\r"), line.find(b"\n"), len(line)) if i >= 0)
    parts = line[:end].split(b" ")
    if len(parts) != 3:
        return [end, base] + [0] * 12
    method, target, proto = parts
    at_target, at_proto = len(method) + 1, len(method) + len(target) + 2
    path, _, args = target.partition(b"?")
    dot = path.rfind(b".")
    exten = (len(path) - dot - 1, base + at_target + dot + 1) if dot >= 0 else (0, 0)
    words = [end, base, len(path), base + at_target, len(args), base + at_target + len(path) + 1 if args else 0,
             *exten, len(target), base + at_target, len(method), base, len(proto), base + at_proto]
    return [w % 2**64 for w in words]


def reqlog_record(done: E.RawEvent, *, line: bytes = b"", base: int = 0x55D0_0000_1000,
                  strs: Sequence[int] | None = None, status: int = 200, err_status: int = 0,
                  request_length: int = 0, sent: int = 0, location: tuple[int, int, int, bytes] = (0, 0, 0, b""),
                  remote: tuple[int, bytes] = (0, b""), clock: tuple[int, int, int, int] | None = None,
                  states: Sequence[tuple[int, int, int, int, int, bytes]] | None = None, nstates: int | None = None,
                  unix: bytes | None = None, rflags: int | None = None) -> bytes:
    """The EV_REQ_LOG record the kernel writes before `done` (an EV_REQ_DONE: its header but
    for the kind, length 0 and `rid`): `location` (loc_conf, name_len, flags, name), `remote`
    (length, sockaddr bytes), `clock` (now_sec, now_msec, start_sec, start_msec), `states`
    (status, peer_len, response, connect, header ms, peer), `unix` the listener's sockaddr;
    `nstates` and `rflags` default to what those say."""
    head = E._HEADER.pack(round(done.ts * 1e9), done.conn_ts, done.offset, done.aux,
                          round(done.clock * 1e9) if done.clock else 0, done.pid, done.rid, done.fd, 0, 0,
                          E.EV_REQ_LOG, done.flags, done.seq)
    if strs is None:
        strs = request_strs(line, base)
    flags = (R.REQLOGF_CLOCK if clock else 0) | (R.REQLOGF_STATES if states is not None else 0) | (
        R.REQLOGF_UNIX if unix is not None else 0)
    rflags = flags if rflags is None else rflags
    states = states or []
    nstates = len(states) if nstates is None else nstates
    loc_conf, name_len, loc_flags, name = location
    tail = R._REQLOG_TAIL.pack(request_length, sent, status, err_status, base, *strs, loc_conf, name_len, loc_flags,
                               name, remote[0], remote[1], *(clock or (0, 0, 0, 0)), rflags, nstates)
    held = b"".join(R._UPSTATE.pack(*s) for s in states)
    place = unix.ljust(R.REQLOG_UNIX_CAP, b"\0")[: R.REQLOG_UNIX_CAP] if unix is not None else b""
    return head + tail + held + place + line[: R.REQLOG_LINE_CAP]


_LINES = [b"GET /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n", b"POST /api/items?id=7&x=%20 HTTP/1.0\r\n",
          b"HEAD / HTTP/1.1", b"GET /a.b/c HTTP/1.1\n", b"GARBAGE\x00\xff\r\n", b"", b"GET /" + b"x" * 600 + b" HTTP/1.1",
          b"OPTIONS * HTTP/1.1\r\n"]
_PEERS = [b"127.0.0.1:8081", b"[::1]:9000", b"backend_group", b"unix:/run/app.sock", b"\xff\xfe bad utf-8",
          b"p" * R.UPSTATE_PEER_CAP]
_MS = st.one_of(st.sampled_from([-1, 0, 1, 30, 74, -5]), st.integers(-(2**63), 2**63 - 1))


@st.composite
def _state(draw: st.DrawFn) -> tuple[int, int, int, int, int, bytes]:
    peer = draw(st.one_of(st.sampled_from(_PEERS), st.binary(max_size=R.UPSTATE_PEER_CAP)))
    peer_len = draw(st.one_of(st.just(len(peer)), st.just(R.UPSTATE_GROUP),   # a group boundary
                              st.sampled_from([0, R.UPSTATE_PEER_CAP, R.UPSTATE_PEER_CAP + 1, 300]),
                              st.integers(0, 2**32 - 1)))
    status = draw(st.one_of(st.sampled_from([0, 200, 404, 502, 504]), st.integers(0, 2**32 - 1)))
    return status, peer_len, draw(_MS), draw(_MS), draw(_MS), peer


@st.composite
def reqlog_fields(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of reqlog_record: plausible values, edges and lies."""
    base = draw(st.sampled_from([0x55D0_0000_1000, 0, 2**64 - 8]))
    line = draw(st.one_of(st.sampled_from(_LINES), st.binary(max_size=600)))
    strs = request_strs(line, base)
    if draw(st.booleans()):   # addresses nginx moved, or lies
        i = draw(st.integers(0, 13))
        strs[i] = draw(st.one_of(st.integers(0, 700), st.integers(0, 2**64 - 1), st.just(base + 3)))
    kw: dict[str, Any] = {"line": line, "base": base, "strs": strs,
                          "status": draw(st.sampled_from([0, 200, 404, 499, 2**64 - 1])),
                          "err_status": draw(st.sampled_from([0, 0, 400, 444])),
                          "request_length": draw(st.one_of(st.integers(-1, 5000), st.integers(-(2**63), 2**63 - 1))),
                          "sent": draw(st.integers(0, 2**64 - 1))}
    if draw(st.booleans()):
        name = draw(st.one_of(st.sampled_from([b"/static/", b"/api/", b"@fallback", b"\\.php$", b"", b"/\xff"]),
                              st.binary(max_size=R.LOC_NAME_CAP)))
        kw["location"] = (draw(st.sampled_from([0, 0x55D0_0000_2000])),
                          draw(st.one_of(st.just(len(name)), st.sampled_from([R.LOC_NAME_CAP + 1, 2**32 - 1]))),
                          draw(st.one_of(st.sampled_from([0, R.LOCF_NAMED, R.LOCF_EXACT, R.LOCF_NOREGEX, R.LOCF_REGEX,
                                                          R.LOCF_REGEX | R.LOCF_EXACT, R.LOCF_NONAME]),
                                         st.integers(0, 2**32 - 1))),
                          name.ljust(R.LOC_NAME_CAP, b"\0"))
    if draw(st.booleans()):
        addr = draw(st.sampled_from(["10.0.0.7:51234", "192.0.2.1:0", "[2001:db8::5]:0", "[::1]:443"]))
        kw["remote"] = (draw(st.sampled_from([16, 28, 7, 2**32 - 1])), sockaddr(addr))
    if draw(st.booleans()):
        kw["clock"] = draw(st.one_of(
            st.tuples(st.just(1_796_612_820), st.integers(0, 999), st.sampled_from([1_796_612_819, 1_796_612_821]),
                      st.integers(0, 999)),
            st.tuples(*(st.integers(0, 2**64 - 1),) * 4)))
    if draw(st.booleans()):
        kw["states"] = draw(st.lists(_state(), max_size=R.UPSTATES_MAX))
        if draw(st.booleans()):   # more than the record holds (nginx had more), or lies
            kw["nstates"] = draw(st.one_of(st.integers(len(kw["states"]), 20), st.integers(0, 2**32 - 1)))
    if draw(st.integers(0, 5)) == 0:
        kw["unix"] = draw(st.sampled_from([b"\x01\x00/run/ngx.sock", b"\x01\x00", b"\x01\x00" + b"u" * 120,
                                           b"\x01\x00/\xff\xfe"]))
    if draw(st.integers(0, 5)) == 0:
        kw["rflags"] = draw(st.integers(0, 2**32 - 1))
    return kw
