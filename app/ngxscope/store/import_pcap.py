"""Open a pcap / pcapng of plaintext HTTP/1.x (tcpdump, dumpcap) as exchanges.

Packets are read with dpkt (Ethernet, Linux cooked v1/v2, raw IP, BSD loopback), TCP
connections reassembled per direction by sequence number (retransmissions and reordering
tolerated; a gap ends what can be read of that direction), and each connection's bytes
decoded with the project's HTTP/1 head parsers (`decode.http1.parse_head` /
`parse_response`): requests framed by Content-Length or chunked encoding, responses by
Content-Length, chunked or the close. Request and response pair in order (pipelining kept).

What a packet capture cannot know is left empty: worker pid, nginx's own times, upstreams.
`request_bytes` / `response_bytes` are head plus body as on the wire (what nginx logs as
`$request_length` / `$bytes_sent`). TLS and HTTP/2 connections are skipped, and said so in
`Session.warning`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

import dpkt

from ngxscope.decode.http1 import HeadError, parse_head, parse_response
from ngxscope.model import Exchange
from ngxscope.store.session import Session, SessionError

__all__ = ["import_pcap", "is_pcap"]

MAX_PCAP_BYTES = 2 * 1024 * 1024 * 1024
_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
            b"TRACE ", b"CONNECT ")
_MAGICS = {b"\xd4\xc3\xb2\xa1": "pcap", b"\xa1\xb2\xc3\xd4": "pcap", b"\x4d\x3c\xb2\xa1": "pcap",
           b"\xa1\xb2\x3c\x4d": "pcap", b"\x0a\x0d\x0d\x0a": "pcapng"}


def is_pcap(path: str | os.PathLike[str]) -> str | None:
    """"pcap" or "pcapng" from the file's magic number, else None."""
    try:
        with open(path, "rb") as f:
            return _MAGICS.get(f.read(4))
    except OSError:
        return None


@dataclass(slots=True)
class _Dir:
    """One direction of a TCP connection: segments by sequence number, and their times."""

    isn: int | None = None
    segs: dict[int, tuple[bytes, float]] = field(default_factory=dict)

    def add(self, seq: int, data: bytes, ts: float) -> None:
        if self.isn is None:
            self.isn = seq
        off = (seq - self.isn) & 0xFFFFFFFF
        if off > 0x7FFFFFFF:  # before the first byte we saw (a retransmission of older data)
            return
        old = self.segs.get(off)
        if old is None or len(old[0]) < len(data):
            self.segs[off] = (data, ts)

    def stream(self) -> tuple[bytes, list[tuple[int, float]], bool]:
        """(contiguous bytes, [(offset, time of the segment starting there)], gap found)."""
        out = bytearray()
        times: list[tuple[int, float]] = []
        for off in sorted(self.segs):
            data, ts = self.segs[off]
            if off > len(out):
                return bytes(out), times, True
            new = data[len(out) - off:]
            if new:
                times.append((len(out), ts))
                out += new
        return bytes(out), times, False


@dataclass(slots=True)
class _Conn:
    a: tuple[str, int]
    b: tuple[str, int]
    client: tuple[str, int] | None = None
    dirs: dict[tuple[str, int], _Dir] = field(default_factory=dict)
    first_ts: float = 0.0


def _addr(ip: bytes) -> str:
    return str(ipaddress.ip_address(ip))


def _hostport(hp: tuple[str, int]) -> str:
    return f"[{hp[0]}]:{hp[1]}" if ":" in hp[0] else f"{hp[0]}:{hp[1]}"


def _ip_packet(linktype: int, buf: bytes) -> Any:
    if linktype == dpkt.pcap.DLT_EN10MB:
        return dpkt.ethernet.Ethernet(buf).data
    if linktype == dpkt.pcap.DLT_LINUX_SLL:
        return dpkt.sll.SLL(buf).data
    if linktype == 276:  # DLT_LINUX_SLL2
        return dpkt.sll2.SLL2(buf).data
    if linktype in (dpkt.pcap.DLT_RAW, 101, 14):
        return dpkt.ip6.IP6(buf) if buf[:1] and buf[0] >> 4 == 6 else dpkt.ip.IP(buf)
    if linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        return dpkt.loopback.Loopback(buf).data
    raise SessionError(f"link type {linktype} is not supported (Ethernet, Linux cooked, raw IP, "
                       "loopback)")


def _at(times: list[tuple[int, float]], offset: int) -> float:
    """Time of the segment holding byte `offset`."""
    t = times[0][1] if times else 0.0
    for off, ts in times:
        if off > offset:
            break
        t = ts
    return t


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _body_end(data: bytes, start: int, headers: list[tuple[str, str]], *, response: bool,
              method: str = "", status: int | None = None) -> int | None:
    """Offset where the body starting at `start` ends; None: not all of it was captured."""
    if response and (method == "HEAD" or status in (204, 304) or (status or 0) < 200):
        return start
    te = (_header(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        pos = start
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(data[pos:eol].split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            pos = eol + 2
            if size == 0:
                end = data.find(b"\r\n\r\n", pos - 2)
                return end + 4 if end >= 0 else None
            pos += size + 2
            if pos > len(data):
                return None
    length = _header(headers, "content-length")
    if length is not None and length.strip().isdigit():
        end = start + int(length)
        return end if end <= len(data) else None
    return len(data) if response else start  # a response without framing: until the close


def _exchanges(conn: _Conn, next_id: int) -> tuple[list[Exchange], str | None] | None:
    """The connection's exchanges and a note on what could not be read; None when the
    client did not speak plaintext HTTP/1 (TLS, HTTP/2...)."""
    assert conn.client is not None
    server = conn.b if conn.client == conn.a else conn.a
    req, req_times, req_gap = conn.dirs.get(conn.client, _Dir()).stream()
    resp, resp_times, resp_gap = conn.dirs.get(server, _Dir()).stream()
    client_s, server_s = _hostport(conn.client), _hostport(server)
    conn_id = f"pcap:{client_s}-{server_s}:{conn.first_ts:.6f}"
    out: list[Exchange] = []
    if req and not req.startswith(_METHODS):
        return None
    rpos = spos = 0
    note = "a gap in the capture cut the connection's bytes" if req_gap or resp_gap else None
    while rpos < len(req):
        if not req.startswith(_METHODS, rpos):
            note = note or f"{client_s}: bytes that are not an HTTP/1 request"
            break
        hend = req.find(b"\r\n\r\n", rpos)
        if hend < 0:
            break
        try:
            parts, headers = parse_head(req[rpos:hend])
        except HeadError as exc:
            note = note or f"{client_s}: {exc}"
            break
        method, target = parts[0], parts[1]
        version = parts[2] if len(parts) > 2 else "HTTP/0.9"
        body_start = hend + 4
        bend = _body_end(req, body_start, headers, response=False)
        if bend is None:
            bend = len(req)
        ex = Exchange(
            id=next_id + len(out), start=_at(req_times, rpos), end=_at(req_times, bend - 1),
            pid=0, client=client_s, server=server_s, tls=False, conn_id=conn_id,
            conn_seq=len(out), method=method, target=target, version=version,
            host=_header(headers, "host") or "", request_bytes=bend - rpos,
            request_headers=headers, request_body=req[body_start:bend],
            request_body_size=bend - body_start)
        rpos = bend
        parsed = parse_response(resp[spos:]) if spos < len(resp) else None
        if parsed is None or parsed.status is None:
            ex.error = "no response in the capture" if parsed is None else parsed.error
            out.append(ex)
            continue
        rstart = spos + parsed.body_offset
        rend = _body_end(resp, rstart, parsed.headers, response=True, method=method,
                         status=parsed.status)
        if rend is None:
            rend = len(resp)
            ex.truncated = True
        ex.status, ex.reason, ex.response_headers = parsed.status, parsed.reason, parsed.headers
        ex.response_body = resp[rstart:rend]
        ex.response_body_size = rend - rstart
        ex.response_bytes = rend - spos
        ex.end = max(ex.end, _at(resp_times, max(spos, rend - 1)))
        spos = rend
        out.append(ex)
    return out, note


def _looks_request(data: bytes) -> bool:
    return data.startswith(_METHODS)


def import_pcap(path: str | os.PathLike[str]) -> Session:
    """Read a pcap/pcapng file into a `Session` (exchanges in order of their start)."""
    path = os.fspath(path)
    kind = is_pcap(path)
    if kind is None:
        raise SessionError(f"{path} is not a pcap or pcapng file")
    conns: dict[tuple[tuple[str, int], tuple[str, int]], _Conn] = {}
    try:
        if os.path.getsize(path) > MAX_PCAP_BYTES:
            raise SessionError(f"{path} is too large to open ({os.path.getsize(path)} bytes)")
        with open(path, "rb") as f:
            reader: Any = dpkt.pcap.Reader(f) if kind == "pcap" else dpkt.pcapng.Reader(f)
            linktype = reader.datalink()
            for ts, buf in reader:
                try:
                    ip = _ip_packet(linktype, buf)
                except (dpkt.UnpackError, IndexError, ValueError):
                    continue
                tcp = getattr(ip, "data", None)
                if not isinstance(tcp, dpkt.tcp.TCP):
                    continue
                src, dst = (_addr(ip.src), tcp.sport), (_addr(ip.dst), tcp.dport)
                key = (src, dst) if src <= dst else (dst, src)
                conn = conns.get(key)
                syn = tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK
                if conn is None or (syn and conn.dirs.get(src) and conn.dirs[src].segs):
                    # a new connection (or the 4-tuple reused): finish the old one apart
                    if conn is not None:
                        conns[(key[0], (key[1][0], -len(conns)))] = conn
                    conn = conns[key] = _Conn(key[0], key[1], first_ts=float(ts))
                d = conn.dirs.setdefault(src, _Dir())
                if syn:
                    conn.client = src
                if tcp.flags & dpkt.tcp.TH_SYN:
                    d.isn = (tcp.seq + 1) & 0xFFFFFFFF
                if tcp.data:
                    if conn.client is None and _looks_request(bytes(tcp.data)):
                        conn.client = src
                    d.add(tcp.seq, bytes(tcp.data), float(ts))
    except (OSError, ValueError, dpkt.dpkt.NeedData, dpkt.UnpackError) as exc:
        if isinstance(exc, SessionError):
            raise
        raise SessionError(f"cannot read {path}: {exc}") from None
    exchanges: list[Exchange] = []
    notes: list[str] = []
    skipped = 0
    for conn in sorted(conns.values(), key=lambda c: c.first_ts):
        if conn.client is None:
            if any(d.segs for d in conn.dirs.values()):
                skipped += 1  # TLS, HTTP/2 or anything not starting with a request
            continue
        found = _exchanges(conn, len(exchanges) + 1)
        if found is None:
            skipped += 1
            continue
        got, note = found
        exchanges += got
        if note:
            notes.append(note)
    exchanges.sort(key=lambda e: e.start)
    for i, ex in enumerate(exchanges, 1):
        ex.id = i
    if skipped:
        notes.append(f"{skipped} connection(s) without plaintext HTTP/1 (TLS?) skipped")
    header = {"t": "header", "format": kind, "version": 0, "tool": "packet capture",
              "target": {kind: path}}
    return Session(header=header, exchanges=exchanges, complete=not notes,
                   warning="; ".join(dict.fromkeys(notes))[:500] or None)

