"""The capture's fast paths give the same answers as the slow ones (never their speed).

- parse_batch (struct.unpack_from) decodes exactly what the ctypes mirror reads;
- RingReader reads BPF ring-buffer records (busy, discarded, padded, wrapped) in order;
- an exchange whose payload the kernel shed is still counted from the EV_REQ_DONE summary,
  and the connection's next exchange decodes normally;
- the kernel's status stands in when the response's bytes were lost;
- encode_record's orjson path writes what the json path means.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import tempfile

from ngxscope.capture import events as E
from ngxscope.capture import ring
from ngxscope.capture.sockaddr import format_sockaddr
from ngxscope.decode.assembler import Assembler
from ngxscope.model import Exchange
from ngxscope.store.codec import encode_record


def _hdr(**kw: int) -> bytes:
    return bytes(E.EvHeader(**kw))


# RawEvent.offset / .aux: the header member each kind names (events.h)
_OFFSET = {E.EV_REQ_DONE: "recvd", E.EV_CLOSE: "recvd", E.EV_CONNECT: "ret", E.EV_CONNECTED: "sock_err",
           E.EV_FORK: "parent"}
_AUX = {E.EV_REQ_DONE: "sent", E.EV_CLOSE: "sent", E.EV_OPEN: "cptr", E.EV_FORK: "child"}


def _slow_parse(buf: bytes, off: float) -> dict[str, object]:
    h = E.EvHeader.from_buffer_copy(buf, 0)
    data_kind = h.kind in (E.EV_RECV, E.EV_SEND, E.EV_SENDFILE)
    d: dict[str, object] = {"kind": h.kind, "ts": h.ts / 1e9 + off, "pid": h.pid, "fd": h.fd,
                            "conn_ts": h.conn_ts, "offset": getattr(h, _OFFSET.get(h.kind, "offset")),
                            "aux": getattr(h, _AUX.get(h.kind, "owner")), "length": h.len if data_kind else 0,
                            "flags": h.flags, "seq": h.seq, "clock": h.clock / 1e9 + off if h.clock else 0.0}
    if h.kind == E.EV_REQ_DONE and not h.flags & E.EVF_H2STREAM:
        d["status"] = h.status
    if h.kind in (E.EV_OPEN, E.EV_CONNECT):
        o = E.EvOpen.from_buffer_copy(buf, 0)
        d["peer"] = format_sockaddr(bytes(o.peer), o.peer_len)
        d["local"] = format_sockaddr(bytes(o.local), o.local_len)
    elif h.kind in (E.EV_RECV, E.EV_SEND, E.EV_SENDFILE):
        d["data"] = buf[E.HEADER_SIZE : E.HEADER_SIZE + h.cap]
    return d


def test_parse_batch_matches_ctypes() -> None:
    import socket

    sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8080) + socket.inet_aton("10.1.2.3") + bytes(8)
    o = E.EvOpen()
    o.h = E.EvHeader(ts=5, conn_ts=5, kind=E.EV_OPEN, pid=7, fd=9, flags=E.EVF_CLIENT, cptr=0xdead)
    ctypes.memmove(o.peer, sa, len(sa))
    o.peer_len = 16
    recs = [
        bytes(o),
        _hdr(ts=10, conn_ts=5, offset=0, pid=7, tid=7, fd=9, len=5, cap=3, kind=E.EV_RECV, flags=2, clock=9) + b"GET",
        _hdr(ts=11, conn_ts=5, recvd=100, sent=200, pid=7, fd=9, status=404, span_us=1501, clock_span_us=1001,
             kind=E.EV_REQ_DONE, flags=E.EVF_CLIENT | E.EVF_SHED, seq=3, clock=12),
        _hdr(ts=12, pid=7, fd=-1, kind=E.EV_FORK, child=99, parent=7),
    ]
    fast = E.parse_batch(recs, 100.0)
    for ev, buf in zip(fast, recs, strict=True):
        for k, v in _slow_parse(buf, 100.0).items():
            assert getattr(ev, k) == v, k
    done = fast[2]
    assert (done.status, done.span, done.clock_span) == (404, 0.0015, 0.001)
    assert E.parse_event(recs[1], 100.0) == fast[1]


def _ring_file(size: int, records: list[tuple[bytes, int]], start: int = 0) -> tuple[int, str]:
    """A file laid out like a BPF ring buffer map's mapping (consumer page, producer page,
    data twice); records = (payload, extra header bits)."""
    page = mmap.PAGESIZE
    data = bytearray(size)
    pos = start
    for payload, bits in records:
        off = pos & (size - 1)
        rec = struct.pack("<II", len(payload) | bits, 0) + payload
        rec += bytes(-len(rec) % 8)
        for i, b in enumerate(rec):
            data[(off + i) % size] = b
        pos += len(rec)
    fd, path = tempfile.mkstemp()
    os.write(fd, struct.pack("<Q", start) + bytes(page - 8) + struct.pack("<Q", pos) + bytes(page - 8)
             + bytes(data) + bytes(data))
    return fd, path


def test_ring_reader_reads_records_in_order() -> None:
    size = 4096
    recs = [(b"a" * 5, 0), (b"b" * 64, 0), (b"skip", ring._DISCARD), (b"c" * 13, 0), (b"busy", ring._BUSY), (b"d", 0)]
    fd, path = _ring_file(size, recs, start=size - 16)  # the second record wraps around the end
    try:
        r = ring.RingReader(fd, size)
        assert r.drain() == [b"a" * 5, b"b" * 64, b"c" * 13]  # discarded skipped, stops at busy
        consumed = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
        assert consumed == r.consumed == size - 16 + 16 + 72 + 16 + 24
        assert r.drain() == []  # still busy
        r.close()
    finally:
        os.close(fd)
        os.unlink(path)


def _ev(kind: int, ts: float, **kw: object) -> E.RawEvent:
    base: dict[str, object] = {"pid": 7, "fd": 9, "conn_ts": 5, "offset": 0, "aux": 0, "length": 0,
                               "flags": E.EVF_CLIENT}
    base.update(kw)
    return E.RawEvent(kind=kind, ts=ts, **base)  # type: ignore[arg-type]


REQ = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_shed_exchange_is_counted_from_the_summary_and_the_next_decodes() -> None:
    out: list[Exchange] = []
    asm = Assembler(out.append)
    asm.feed(_ev(E.EV_OPEN, 1.0, peer="1.2.3.4:5", local="127.0.0.1:80"))
    # exchange 1: request and response payload shed (no RECV/SEND events at all)
    asm.feed(_ev(E.EV_REQ_DONE, 2.0, offset=len(REQ), aux=len(RESP) + 10, seq=1, status=503,
                 span=0.25, clock=2.0, clock_span=0.2, flags=E.EVF_CLIENT | E.EVF_SHED))
    # exchange 2: whole again
    asm.feed(_ev(E.EV_RECV, 3.0, offset=len(REQ), length=len(REQ), data=REQ))
    asm.feed(_ev(E.EV_SEND, 3.1, offset=len(RESP) + 10, length=len(RESP), data=RESP))
    asm.feed(_ev(E.EV_REQ_DONE, 3.2, offset=2 * len(REQ), aux=2 * len(RESP) + 10, seq=2, status=200))
    assert len(out) == 2
    shed, whole = out
    assert shed.status == 503 and shed.request_bytes == len(REQ) and shed.response_bytes == len(RESP) + 10
    assert abs(shed.start - 1.75) < 1e-9 and shed.end == 2.0 and shed.nginx_ms == 200.0
    assert shed.summary_only and shed.error is None and shed.truncated
    assert shed.client == "1.2.3.4:5"
    assert asm.stats.shed == 1
    assert (whole.method, whole.target, whole.status, whole.error) == ("GET", "/a", 200, None)
    assert whole.request_bytes == len(REQ) and whole.response_bytes == len(RESP)
    assert whole.response_body == b"ok"


def test_kernel_status_stands_in_for_lost_response_bytes() -> None:
    out: list[Exchange] = []
    asm = Assembler(out.append)
    asm.feed(_ev(E.EV_OPEN, 1.0))
    asm.feed(_ev(E.EV_RECV, 1.1, length=len(REQ), data=REQ))
    # the SEND event was lost: REQ_DONE's counters say 50 bytes went out, the kernel saw 404
    asm.feed(_ev(E.EV_REQ_DONE, 1.2, offset=len(REQ), aux=50, seq=1, status=404))
    (ex,) = out
    assert (ex.method, ex.status, ex.response_bytes, ex.truncated) == ("GET", 404, 50, True)


def test_encode_record_fast_path_means_the_same() -> None:
    rec = {"t": "exchange", "a": 1.5, "b": [["k", "v"]], "c": None, "d": True, "e": 10**18,
           "f": "quote\" and \\ and \x01", "g": 1e-7, "h": 1732541234.123456}
    line = encode_record(rec)
    assert line.endswith(b"\n") and line.isascii()
    assert json.loads(line) == rec
    for odd in ("caf\u00e9", "lone \ud800 surrogate"):  # non-ASCII and unencodable: the json path
        line = encode_record({"t": "event", "s": odd})
        assert line.isascii() and json.loads(line)["s"] == odd
    big = encode_record({"t": "stats", "n": 1 << 70})
    assert json.loads(big)["n"] == 1 << 70
