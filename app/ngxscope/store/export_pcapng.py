"""pcapng export: the plaintext HTTP nginx exchanged (TLS decrypted), framed as TCP.

Built with dpkt: `dpkt.pcapng` blocks (section, one interface per worker, enhanced packets
with comments and direction flags) and `dpkt.ethernet` / `ip` / `ip6` / `tcp` packets (dpkt
computes the checksums). The HTTP payload (heads rebuilt, bodies with their true length)
comes from store.pcapng_payload.

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
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import IO

import dpkt
from dpkt import pcapng

from ngxscope import __version__
from ngxscope.decode.wire import Segment, parse_frame
from ngxscope.model import Exchange, WireFrame
from ngxscope.store.export_har import header
from ngxscope.store.pcapng_payload import (
    CONTINUE,
    MSS,
    Piece,
    body_pieces,
    chunked_fill,
    head_bytes,
    is_chunked,
    piece_length,
    request_body_len,
    response_body_len,
    segments,
)

__all__ = ["MSS", "chunked_fill", "write_pcapng"]

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
FIN, SYN, RST, PSH, ACK = dpkt.tcp.TH_FIN, dpkt.tcp.TH_SYN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_ACK
_SNAPLEN = 262144
_EPB_FLAGS = 2
"""pcapng option epb_flags: bits 0-1 the direction (1 inbound, 2 outbound)."""


# --- pcapng blocks (dpkt.pcapng) ---------------------------------------------------------


def _opt(code: int, text: str) -> pcapng.PcapngOptionLE:
    return pcapng.PcapngOptionLE(code=code, data=text.encode("utf-8", "replace"))


def _shb() -> pcapng.SectionHeaderBlockLE:
    return pcapng.SectionHeaderBlockLE(opts=[
        _opt(pcapng.PCAPNG_OPT_COMMENT, "synthetic TCP framing of the HTTP nginx exchanged, captured by ngxscope"),
        _opt(pcapng.PCAPNG_OPT_SHB_USERAPPL, f"ngxscope {__version__}"),
        pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_ENDOFOPT),
    ])


def _idb(pid: int) -> pcapng.InterfaceDescriptionBlockLE:
    return pcapng.InterfaceDescriptionBlockLE(snaplen=_SNAPLEN, linktype=dpkt.pcap.DLT_EN10MB, opts=[
        _opt(pcapng.PCAPNG_OPT_IF_NAME, f"nginx-worker-{pid}"),
        _opt(pcapng.PCAPNG_OPT_IF_DESCRIPTION, f"nginx worker pid {pid} (plaintext as nginx read and wrote it)"),
        pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_ENDOFOPT),
    ])


def _epb(iface: int, frame: bytes, comment: str, inbound: bool) -> pcapng.EnhancedPacketBlockLE:
    return pcapng.EnhancedPacketBlockLE(iface_id=iface, pkt_data=frame, caplen=len(frame),
                                        pkt_len=len(frame), opts=[
        _opt(pcapng.PCAPNG_OPT_COMMENT, comment),
        pcapng.PcapngOptionLE(code=_EPB_FLAGS, data=(1 if inbound else 2).to_bytes(4, "little")),
        pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_ENDOFOPT),
    ])


class _CutPacketBlock(pcapng.EnhancedPacketBlockLE):
    """An enhanced packet block for a packet longer than what was kept of it (the socket
    filter cuts in the kernel): dpkt writes the original length equal to the captured one,
    so it is put back after (pcapng: the EPB's original packet length at byte 24)."""

    def __bytes__(self) -> bytes:
        data = super().__bytes__()
        return data[:24] + struct.pack("<I", getattr(self, "orig_len", self.caplen)) + data[28:]


# --- addresses and frames (dpkt.ethernet / ip / ip6 / tcp) --------------------------------


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
        tcp = dpkt.tcp.TCP(sport=sp, dport=dp, seq=seq & 0xFFFFFFFF,
                           ack=ack & 0xFFFFFFFF if flags & ACK else 0, flags=flags, win=65535,
                           opts=dpkt.tcp.TCP_OPT_MSS.to_bytes(1, "big") + b"\x04" + MSS.to_bytes(2, "big")
                           if flags & SYN else b"", data=payload)
        tcp.off = (20 + len(tcp.opts)) // 4
        ip: dpkt.Packet
        if self.v6:
            ip = dpkt.ip6.IP6(src=src, dst=dst, nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, plen=len(tcp), data=tcp)
            eth_type = dpkt.ethernet.ETH_TYPE_IP6
        else:
            self.ip_id = (self.ip_id + 1) & 0xFFFF
            ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, id=self.ip_id, df=1,
                            ttl=64, data=tcp)
            ip.len = 20 + len(tcp)
            eth_type = dpkt.ethernet.ETH_TYPE_IP
        eth = dpkt.ethernet.Ethernet(src=CLIENT_MAC if from_client else SERVER_MAC,
                                     dst=SERVER_MAC if from_client else CLIENT_MAC, type=eth_type, data=ip)
        return bytes(eth)


def _ts(ts: float) -> float:
    return max(0.0, ts) if math.isfinite(ts) else 0.0


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
        self.pcap: pcapng.Writer | None = None

    def declare(self, pids: list[int]) -> None:
        """Interfaces for these workers (the section header goes first, with the first ones)."""
        new = [p for p in dict.fromkeys(pids) if p not in self.ifaces]
        for pid in new:
            self.ifaces[pid] = len(self.ifaces)
        if self.pcap is None:
            self.pcap = pcapng.Writer(self.out, shb=_shb(), idb=[_idb(p) for p in new] or None)
        else:
            for pid in new:
                self.out.write(bytes(_idb(pid)))

    def iface(self, pid: int) -> int:
        if pid not in self.ifaces:
            self.declare([pid])
        return self.ifaces[pid]

    def close(self) -> None:
        if self.pcap is None:  # nothing was written: a valid file all the same
            self.pcap = pcapng.Writer(self.out, shb=_shb(), idb=_idb(0))

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
            assert self.pcap is not None  # declared by _open
            write, when = self.pcap.writepkt, _ts(ts)
            for from_client, flags, seq, pieces in packets:
                ack = conn.s_acked if from_client else conn.c_acked
                if not pieces:
                    frame = conn.frame(from_client, flags, seq, ack, b"")
                    write(_epb(conn.iface, frame, comment, from_client), when)
                    conn.sent(from_client, flags, seq, 0)
                    continue
                for payload, pad in segments(pieces):
                    frame = conn.frame(from_client, flags, seq, ack, payload)
                    note = f"{comment} pad={pad}" if pad else comment
                    write(_epb(conn.iface, frame, note, from_client), when)
                    conn.sent(from_client, flags, seq, len(payload))
                    seq += len(payload)

        self.order += 1
        heappush(self.heap, (ts, self.order, emit))

    def _send(self, conn: _Conn, from_client: bool, pieces: list[Piece], out: list[Packet]) -> None:
        if from_client:
            out.append((True, ACK | PSH, conn.cseq, pieces))
            conn.cseq += piece_length(pieces)
        else:
            out.append((False, ACK | PSH, conn.sseq, pieces))
            conn.sseq += piece_length(pieces)

    def add(self, ex: Exchange) -> None:
        while self.heap and self.heap[0][0] <= ex.start:
            heappop(self.heap)[2]()
        key = ex.conn_id or f"#{ex.id}:{self.order}"
        conn = self.conns.get(key)
        first: list[Packet] = []
        if conn is None:
            conn = self.conns[key] = self._open(ex, key)
            if not self._wire(ex, conn):  # no real handshake kept: a synthetic one
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
            resp_head = head_bytes(f"HTTP/1.1 {status} {ex.reason}".rstrip(" "), ex.response_headers)
            resp_body = body_pieces(
                ex.response_body, response_body_len(ex, status), is_chunked(ex.response_headers)
            )
        if ex.method:
            version = ex.version if ex.version.startswith("HTTP/1.") else "HTTP/1.1"
            target = ex.target or "/"
            self._send(conn, True, [head_bytes(f"{ex.method} {target} {version}", ex.request_headers)], first)
            body = body_pieces(ex.request_body, request_body_len(ex), is_chunked(ex.request_headers))
            expect = (header(ex.request_headers, "Expect") or "").lower() == "100-continue"
            if expect and status is not None and (
                ex.response_bytes - len(resp_head) - piece_length(resp_body) == len(CONTINUE)
            ):
                self._send(conn, False, [CONTINUE], first)
            if piece_length(body):
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

    def _wire(self, ex: Exchange, conn: _Conn | None) -> bool:
        """Write the connection's real packets (`Exchange.wire_packets`) as the socket filter
        cut them, each at its time; with `conn`, its synthetic stream then goes on from their
        sequence numbers. False (nothing written) unless they hold the SYN and SYN-ACK."""
        segs = [(w, parse_frame(w.ts, w.frame)) for w in ex.wire_packets]
        kept = [(w, s) for w, s in segs if s is not None and {s.src, s.dst} == {ex.client, ex.server}]
        if conn is not None:
            # before the HTTP: the handshakes only (SYNs, the handshake ACK, TLS records); the
            # FIN / RST and bare retransmissions belong after it, where the export puts its own
            handshake: list[tuple[WireFrame, Segment]] = []
            acked = False
            for w, seg in kept:
                if seg.flags & SYN or seg.payload:
                    handshake.append((w, seg))
                elif not acked and seg.src == ex.client and not seg.flags & (FIN | RST):
                    handshake.append((w, seg))
                    acked = True
            kept = handshake
        if conn is not None and not (any(s.flags & SYN and s.src == ex.client for _w, s in kept)
                                     and any(s.flags & SYN and s.src == ex.server for _w, s in kept)):
            return False
        if not kept:
            return False
        iface = self.iface(ex.pid)
        comment = f"pid={ex.pid} conn={ex.conn_id} tls={int(ex.tls)} ex={ex.id} wire=1"
        nxt = {True: 0, False: 0}

        def advance(from_client: bool, end: int) -> None:
            if not nxt[from_client] or 0 < ((end - nxt[from_client]) & 0xFFFFFFFF) < 0x80000000:
                nxt[from_client] = end & 0xFFFFFFFF

        for w, seg in kept:
            from_client = seg.src == ex.client
            length = max(seg.length, len(seg.payload))
            advance(from_client, seg.seq + length + (1 if seg.flags & (SYN | FIN) else 0))
            if seg.flags & ACK and seg.ack:  # bytes the peer sent that the filter did not pass
                advance(not from_client, seg.ack)
            epb = _CutPacketBlock(iface_id=iface, pkt_data=w.frame, opts=_epb(iface, b"", comment, from_client).opts)
            epb.orig_len = len(w.frame) + length - len(seg.payload)  # as long as it was

            def emit(epb: pcapng.EnhancedPacketBlockLE = epb, ts: float = w.ts) -> None:
                self._declared().writepkt(epb, _ts(ts))

            self.order += 1
            heappush(self.heap, (w.ts, self.order, emit))
        if conn is not None:
            conn.cseq = conn.c_acked = nxt[True]
            conn.sseq = conn.s_acked = nxt[False]
        return True

    def _declared(self) -> pcapng.Writer:
        assert self.pcap is not None  # an interface was declared first
        return self.pcap

    def add_record(self, ex: Exchange) -> None:
        """A connection that never became a request: its real packets, if kept."""
        while self.heap and self.heap[0][0] <= ex.start:
            heappop(self.heap)[2]()
        self._wire(ex, None)

    def _add_tcp(self, ex: Exchange, conn: _Conn, key: str, first: list[Packet]) -> None:
        """A TCP proxy session: the client's bytes at its start, nginx's at its end."""
        if ex.request_bytes:
            self._send(conn, True, body_pieces(ex.request_body, ex.request_bytes, False), first)
        self._push(ex.start, conn, ex.id, first)
        last: list[Packet] = []
        if ex.response_bytes:
            self._send(conn, False, body_pieces(ex.response_body, ex.response_bytes, False), last)
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
    if pids:
        writer.declare(list(pids))
    n = 0
    last_ts = 0.0
    for ex in exchanges:
        if ex.conn_outcome is not None:
            writer.add_record(ex)  # no HTTP to show: the packets the filter kept, if any
            continue
        writer.add(ex)
        last_ts = max(last_ts, ex.end, ex.start)
        n += 1
    writer.finish(last_ts)
    writer.close()
    return n
