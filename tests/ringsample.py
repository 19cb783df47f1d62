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
"""

from __future__ import annotations

import gzip
import socket
import struct
from pathlib import Path

from ngxscope.capture import events as E

__all__ = ["load_sample", "record", "sockaddr"]

SAMPLE = Path(__file__).parent / "capture" / "samples" / "ring-records.bin.gz"
_LEN = struct.Struct("<I")


def load_sample() -> list[bytes]:
    data = gzip.decompress(SAMPLE.read_bytes())
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
