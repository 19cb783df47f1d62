"""pcapng export: the plaintext HTTP nginx exchanged (TLS decrypted), framed as TCP.

Wireshark and tshark dissect it as ordinary HTTP over TCP:

- Ethernet + IPv4 (or IPv6) + TCP with the real client and server addresses and ports
  (synthetic ones for an address that is not ip:port, e.g. a unix socket), MAC addresses
  02:00:00:00:00:01 (client) and :02 (server).
- Per connection a synthetic 3-way handshake (SYN with MSS 1460) before its first request,
  consistent sequence and acknowledgement numbers across every keep-alive (and pipelined)
  request on it, payload split into segments of at most 1460 bytes, and a FIN exchange
  after its last response. Requests are timed at the exchange start, responses at its end;
  packets are written in time order (bounded memory: only the exchanges still in flight
  are held, and their payload is produced segment by segment).
- One interface (IDB) per nginx worker pid ("nginx-worker-PID"); every packet carries an
  EPB comment "pid=PID conn=CONN_ID tls=0|1 ex=ID" and its direction as seen by nginx
  (epb_flags inbound / outbound).
- Heads are rebuilt from the parsed request/response (wire order, "Name: value"); the
  response line says HTTP/1.1 (what nginx sends). An `Expect: 100-continue` request whose
  byte counts include the interim response gets its "100 Continue" back between head and
  body.
- Bodies that were not captured whole (payload cap, sendfile(2), lost events) keep their
  true length: the missing bytes are sent as zeros, and the packet comment adds
  "pad=N" (zero bytes in that packet that were not captured). Zeros keep tshark's HTTP
  framing right where skipped sequence ranges would leave it waiting for the gap: for
  Content-Length bodies the length is the header's; for a chunked body the captured chunk
  is completed with zeros and the rest filled with one valid zero-filled chunk and the last
  chunk, so the next message on the connection still starts where it should.
- A TCP proxy session (nginx's stream module, `Exchange.is_tcp`) is its bytes as they were,
  no HTTP framing: what the client sent at the session's start, what nginx wrote back at its
  end (uncaptured bytes as zeros, "pad=N"), then the FIN exchange.
"""

from __future__ import annotations

import ipaddress
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import IO

from ngxscope import __version__
from ngxscope.model import Exchange
from ngxscope.store.export_har import header

__all__ = ["MSS", "chunked_fill", "write_pcapng"]

MSS = 1460
"""Largest TCP payload per packet."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
_LE = sys.byteorder == "little"
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10

Piece = bytes | int
"""Payload: captured bytes, or a count of zero bytes standing for uncaptured ones."""


# --- pcapng blocks ---------------------------------------------------------------------


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def _shb() -> bytes:
    opts = _opt(1, b"synthetic TCP framing of the HTTP nginx exchanged, captured by ngxscope")
    opts += _opt(4, f"ngxscope {__version__}".encode()) + _opt(0, b"")
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts)


def _idb(pid: int) -> bytes:
    opts = _opt(2, f"nginx-worker-{pid}".encode())
    opts += _opt(3, f"nginx worker pid {pid} (plaintext as nginx read and wrote it)".encode())
    opts += _opt(0, b"")
    return _block(1, struct.pack("<HHI", 1, 0, 262144) + opts)


def _epb(iface: int, ts: float, frame: bytes, comment: str, inbound: bool) -> bytes:
    us = max(0, round(ts * 1e6)) if math.isfinite(ts) else 0
    head = struct.pack("<IIIII", iface, us >> 32, us & 0xFFFFFFFF, len(frame), len(frame))
    opts = _opt(1, comment.encode("utf-8", "replace"))
    opts += _opt(2, struct.pack("<I", 1 if inbound else 2)) + _opt(0, b"")
    return _block(6, head + frame + b"\0" * (-len(frame) % 4) + opts)


# --- addresses and frames ----------------------------------------------------------------


def _checksum(data: bytes) -> bytes:
    if len(data) % 2:
        data += b"\0"
    s = sum(array("H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("=H", ~s & 0xFFFF)  # native order over native words = network bytes


def _parse_addr(addr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    try:
        if addr.startswith("["):
            host, _, port = addr[1:].partition("]:")
        else:
            host, _, port = addr.rpartition(":")
        return ipaddress.ip_address(host), int(port)
    except ValueError:
        return None


@dataclass(slots=True)
class _Conn:
    conn_id: str
    pid: int
    tls: bool
    iface: int
    client: bytes
    server: bytes
    cport: int
    sport: int
    v6: bool
    cseq: int
    sseq: int
    left: int
    ip_id: int = 0
    c_acked: int = 0
    """Next client sequence number written to the file so far (what the server acks)."""
    s_acked: int = 0
    """Next server sequence number written to the file so far (what the client acks)."""

    def sent(self, from_client: bool, flags: int, seq: int, length: int) -> None:
        end = seq + length + (1 if flags & (SYN | FIN) else 0)
        if from_client:
            self.c_acked = max(self.c_acked, end)
        else:
            self.s_acked = max(self.s_acked, end)

    def frame(self, from_client: bool, flags: int, seq: int, ack: int, payload: bytes) -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        opts = struct.pack(">BBH", 2, 4, MSS) if flags & SYN else b""
        hlen = 20 + len(opts)
        tcp = struct.pack(
            ">HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF if flags & ACK else 0,
            (hlen // 4) << 4, flags, 65535, 0, 0,
        ) + opts
        seg_len = len(tcp) + len(payload)
        if self.v6:
            pseudo = src + dst + struct.pack(">IxxxB", seg_len, 6)
        else:
            pseudo = src + dst + struct.pack(">xBH", 6, seg_len)
        csum = _checksum(pseudo + tcp + payload)
        tcp = tcp[:16] + csum + tcp[18:]
        if self.v6:
            ip = struct.pack(">IHBB", 0x60000000, seg_len, 6, 64) + src + dst
            eth_type = 0x86DD
        else:
            self.ip_id = (self.ip_id + 1) & 0xFFFF
            ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + seg_len, self.ip_id, 0x4000, 64, 6, 0)
            ip = ip[:10] + _checksum(ip + src + dst) + src + dst
            eth_type = 0x0800
        eth = (SERVER_MAC + CLIENT_MAC) if from_client else (CLIENT_MAC + SERVER_MAC)
        return eth + struct.pack(">H", eth_type) + ip + tcp + payload


# --- payload -------------------------------------------------------------------------------


def _enc(text: str) -> bytes:
    """Header text back to bytes: latin-1 as decoded, else UTF-8 (lone surrogates kept)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _head(first: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [first] + [f"{k}: {v}" for k, v in headers]
    return _enc("\r\n".join(lines) + "\r\n\r\n")


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    value = header(headers, "Content-Length")
    if value is not None and value.strip().isdigit():
        return int(value.strip())
    return None


def _is_chunked(headers: list[tuple[str, str]]) -> bool:
    return "chunked" in (header(headers, "Transfer-Encoding") or "").lower()


def chunked_fill(captured: bytes, total: int) -> list[Piece] | None:
    """Complete a cut chunked body to exactly `total` bytes with valid chunked framing.

    Returns pieces (captured prefix, zero runs, framing) or None when it cannot be done.
    """
    pos, n = 0, len(captured)
    keep, completion = n, b""
    zeros = 0
    while True:
        eol = captured.find(b"\r\n", pos)
        if eol < 0:
            keep = pos  # cut inside a size line: drop the partial line
            break
        try:
            size = int(captured[pos:eol].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None
        if size == 0:
            return None  # the last chunk was captured: nothing sensible to fill
        data = eol + 2
        if data + size + 2 <= n:
            pos = data + size + 2
            continue
        if data + size <= n:  # cut in the CRLF after the data
            keep, completion = data + size, b"\r\n"
        else:
            keep, zeros, completion = n, data + size - n, b"\r\n"
        break
    rest = total - keep - zeros - len(completion)
    tail = _filler(rest)
    if tail is None:
        return None
    pieces: list[Piece] = [captured[:keep]]
    if zeros:
        pieces.append(zeros)
    pieces.append(completion)
    pieces.extend(tail)
    return pieces


def _filler(rest: int) -> list[Piece] | None:
    """Exactly `rest` bytes of chunked framing ending the body (zero-filled data)."""
    if rest < 5:
        return None
    if rest <= 10:  # "0\r\n\r\n" with leading zeros on the size
        return [b"0" * (rest - 4) + b"\r\n\r\n"]
    for width in range(1, 16):
        k = rest - 9 - width
        if k >= 1 and len(f"{k:x}") <= width:
            return [f"{k:0{width}x}\r\n".encode(), k, b"\r\n0\r\n\r\n"]
    return None


def _body(captured: bytes, length: int, chunked: bool) -> list[Piece]:
    if len(captured) >= length:
        return [captured[:length]]
    if chunked:
        pieces = chunked_fill(captured, length)
        if pieces is not None:
            return pieces
    return [captured, length - len(captured)]


def _request_body_len(ex: Exchange) -> int:
    if _is_chunked(ex.request_headers):
        return ex.request_body_size
    cl = _content_length(ex.request_headers)
    return cl if cl is not None else ex.request_body_size


def _response_body_len(ex: Exchange, status: int) -> int:
    if ex.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    cl = None if _is_chunked(ex.response_headers) else _content_length(ex.response_headers)
    return cl if cl is not None else ex.response_body_size


def _length(pieces: list[Piece]) -> int:
    return sum(p if isinstance(p, int) else len(p) for p in pieces)


def _segments(pieces: list[Piece]) -> Iterator[tuple[bytes, int]]:
    """(payload, zero-filled bytes in it) of at most MSS bytes each."""
    buf = bytearray()
    pad = 0
    for piece in pieces:
        if isinstance(piece, int):
            left = piece
            while left:
                take = min(left, MSS - len(buf))
                buf += bytes(take)
                pad += take
                left -= take
                if len(buf) == MSS:
                    yield bytes(buf), pad
                    buf.clear()
                    pad = 0
            continue
        view = memoryview(piece)
        while view:
            take = MSS - len(buf)
            buf += view[:take]
            view = view[take:]
            if len(buf) == MSS:
                yield bytes(buf), pad
                buf.clear()
                pad = 0
    if buf:
        yield bytes(buf), pad


# --- the writer ----------------------------------------------------------------------------

Packet = tuple[bool, int, int, list[Piece]]
"""(from client, TCP flags, seq, payload pieces) of one logical send. Acknowledgement
numbers are taken when a packet is written: whatever the peer has sent so far in the file,
so pipelined requests never acknowledge responses not written yet."""


class _Writer:
    def __init__(self, out: IO[bytes], conn_counts: Mapping[str, int] | None) -> None:
        self.out = out
        self.counts = conn_counts
        self.ifaces: dict[int, int] = {}
        self.conns: dict[str, _Conn] = {}
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.order = 0
        self.synthetic = 0
        out.write(_shb())

    def iface(self, pid: int) -> int:
        if pid not in self.ifaces:
            self.ifaces[pid] = len(self.ifaces)
            self.out.write(_idb(pid))
        return self.ifaces[pid]

    def _open(self, ex: Exchange, key: str) -> _Conn:
        client, server = _parse_addr(ex.client), _parse_addr(ex.server)
        self.synthetic += 1
        if server is None:
            server = (ipaddress.ip_address("127.0.0.1"), 443 if ex.tls else 80)
        if client is None:
            client = (ipaddress.ip_address("127.0.0.2"), 1024 + self.synthetic % 64000)
        v6 = client[0].version == 6 or server[0].version == 6

        def packed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
            if v6 and ip.version == 4:
                return ipaddress.IPv6Address("::ffff:" + str(ip)).packed
            return ip.packed

        seed = f"{key}#{self.synthetic}".encode("utf-8", "replace")
        isn = zlib.crc32(seed)
        if not ex.conn_id:
            count = 1
        elif self.counts is None:
            count = 1 << 62  # open until the end
        else:
            count = self.counts.get(ex.conn_id, 1)
        return _Conn(
            conn_id=ex.conn_id, pid=ex.pid, tls=ex.tls, iface=self.iface(ex.pid),
            client=packed(client[0]), server=packed(server[0]), cport=client[1],
            sport=server[1], v6=v6, cseq=isn, sseq=zlib.crc32(b"s" + seed),
            left=count, c_acked=isn, s_acked=zlib.crc32(b"s" + seed),
        )

    def _push(self, ts: float, conn: _Conn, ex_id: int, packets: list[Packet]) -> None:
        comment = f"pid={conn.pid} conn={conn.conn_id} tls={int(conn.tls)} ex={ex_id}"

        def emit() -> None:
            write = self.out.write
            for from_client, flags, seq, pieces in packets:
                ack = conn.s_acked if from_client else conn.c_acked
                if not pieces:
                    frame = conn.frame(from_client, flags, seq, ack, b"")
                    write(_epb(conn.iface, ts, frame, comment, from_client))
                    conn.sent(from_client, flags, seq, 0)
                    continue
                for payload, pad in _segments(pieces):
                    frame = conn.frame(from_client, flags, seq, ack, payload)
                    note = f"{comment} pad={pad}" if pad else comment
                    write(_epb(conn.iface, ts, frame, note, from_client))
                    conn.sent(from_client, flags, seq, len(payload))
                    seq += len(payload)

        self.order += 1
        heappush(self.heap, (ts, self.order, emit))

    def _send(self, conn: _Conn, from_client: bool, pieces: list[Piece], out: list[Packet]) -> None:
        if from_client:
            out.append((True, ACK | PSH, conn.cseq, pieces))
            conn.cseq += _length(pieces)
        else:
            out.append((False, ACK | PSH, conn.sseq, pieces))
            conn.sseq += _length(pieces)

    def add(self, ex: Exchange) -> None:
        while self.heap and self.heap[0][0] <= ex.start:
            heappop(self.heap)[2]()
        key = ex.conn_id or f"#{ex.id}:{self.order}"
        conn = self.conns.get(key)
        first: list[Packet] = []
        if conn is None:
            conn = self.conns[key] = self._open(ex, key)
            first += [
                (True, SYN, conn.cseq, []),
                (False, SYN | ACK, conn.sseq, []),
                (True, ACK, conn.cseq + 1, []),
            ]
            conn.cseq += 1
            conn.sseq += 1
        if ex.is_tcp:
            self._add_tcp(ex, conn, key, first)
            return
        status = ex.status
        resp_head = b""
        resp_body: list[Piece] = []
        if status is not None:
            resp_head = _head(f"HTTP/1.1 {status} {ex.reason}".rstrip(" "), ex.response_headers)
            resp_body = _body(
                ex.response_body, _response_body_len(ex, status), _is_chunked(ex.response_headers)
            )
        if ex.method:
            version = ex.version if ex.version.startswith("HTTP/1.") else "HTTP/1.1"
            target = ex.target or "/"
            self._send(conn, True, [_head(f"{ex.method} {target} {version}", ex.request_headers)], first)
            body = _body(ex.request_body, _request_body_len(ex), _is_chunked(ex.request_headers))
            expect = (header(ex.request_headers, "Expect") or "").lower() == "100-continue"
            if expect and status is not None and (
                ex.response_bytes - len(resp_head) - _length(resp_body) == len(CONTINUE)
            ):
                self._send(conn, False, [CONTINUE], first)
            if _length(body):
                self._send(conn, True, body, first)
        elif ex.request_body:
            self._send(conn, True, [ex.request_body], first)
        self._push(ex.start, conn, ex.id, first)
        last: list[Packet] = []
        if status is not None:
            self._send(conn, False, [resp_head, *resp_body], last)
        elif ex.response_body:
            self._send(conn, False, [ex.response_body], last)
        self._end_exchange(ex, conn, key, last)

    def _add_tcp(self, ex: Exchange, conn: _Conn, key: str, first: list[Packet]) -> None:
        """A TCP proxy session: the client's bytes at its start, nginx's at its end."""
        if ex.request_bytes:
            self._send(conn, True, _body(ex.request_body, ex.request_bytes, False), first)
        self._push(ex.start, conn, ex.id, first)
        last: list[Packet] = []
        if ex.response_bytes:
            self._send(conn, False, _body(ex.response_body, ex.response_bytes, False), last)
        self._end_exchange(ex, conn, key, last)

    def _end_exchange(self, ex: Exchange, conn: _Conn, key: str, last: list[Packet]) -> None:
        """nginx's packets of `ex` at its end, with the connection's FIN after its last exchange."""
        conn.left -= 1
        if conn.left <= 0:
            self._fin(conn, last)
            del self.conns[key]
        if last:
            self._push(max(ex.end, ex.start), conn, ex.id, last)

    def _fin(self, conn: _Conn, out: list[Packet]) -> None:
        out.append((False, FIN | ACK, conn.sseq, []))
        conn.sseq += 1
        out.append((True, FIN | ACK, conn.cseq, []))
        conn.cseq += 1
        out.append((False, ACK, conn.sseq, []))

    def finish(self, last_ts: float) -> None:
        for conn in list(self.conns.values()):
            packets: list[Packet] = []
            self._fin(conn, packets)
            self._push(last_ts, conn, 0, packets)
        self.conns.clear()
        while self.heap:
            heappop(self.heap)[2]()


def write_pcapng(
    exchanges: Iterable[Exchange],
    out: IO[bytes],
    *,
    pids: Iterable[int] = (),
    conn_counts: Mapping[str, int] | None = None,
) -> int:
    """Write exchanges (in start order) as a pcapng capture; returns how many (connections
    that never became a request are left out).

    `pids` pre-declares the interfaces (else each is declared at first use);
    `conn_counts` (exchanges per connection id, as `SortedExchanges` counts them) lets a
    connection be closed right after its last exchange, else all close at the end.
    """
    writer = _Writer(out, conn_counts)
    for pid in pids:
        writer.iface(pid)
    n = 0
    last_ts = 0.0
    for ex in exchanges:
        if ex.conn_outcome is not None:
            continue  # a connection that never became a request: no HTTP to show
        writer.add(ex)
        last_ts = max(last_ts, ex.end, ex.start)
        n += 1
    writer.finish(last_ts)
    return n
