"""Packets the socket filter passed -> per-connection facts (`ConnTracker`).

`parse_frame` decodes one cut Ethernet frame with dpkt (Ethernet, IPv4/IPv6, TCP) into a
`Segment`; `ConnTracker.feed` follows each connection from its SYN: TCP connect time (SYN
-> the client's ACK of the handshake), the TLS handshake (ClientHello -> the client's last
handshake flight; version, cipher, SNI, ALPN, resumption), retransmissions, FIN / RST and
alerts. Connections are keyed like `Exchange.client` / `Exchange.server` ("ip:port",
"[v6]:port"), so the pipeline joins them to exchanges by that 4-tuple.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import dpkt

from .tlswire import ClientHello, ServerHello, TlsAlert, TlsParse, parse_client_flight, parse_tls

__all__ = [
    "MAX_FRAMES",
    "ConnFacts",
    "ConnTracker",
    "Segment",
    "parse_frame",
    "parse_frame_dpkt",
]

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
MAX_FRAMES = 32
"""Packets kept per connection (a handshake is 6-10; retransmissions add some)."""
HELLO_MAX = 32768
"""The most bytes of a client's first flight followed (the filter's WIRE_HELLO_MAX)."""
_ERRORS = (dpkt.Error, ValueError, OverflowError, struct.error, IndexError, TypeError, AttributeError)


@dataclass(slots=True, frozen=True)
class Segment:
    """One TCP segment as the filter passed it."""

    ts: float
    src: str
    """Sender "ip:port"."""
    dst: str
    """Receiver "ip:port"."""
    seq: int
    flags: int
    payload: bytes
    """TCP payload as cut in the kernel (TLS records, or empty)."""
    length: int = -1
    """The segment's whole TCP payload length (from the IP header); -1 if unknown."""
    ack: int = 0
    """Acknowledgement number."""


def _addr(raw: bytes, port: int) -> str:
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw)}:{port}"
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return f"{socket.inet_ntop(socket.AF_INET, raw[12:])}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{port}"


def parse_frame_dpkt(ts: float, frame: bytes) -> Segment | None:
    """A cut Ethernet frame -> its TCP segment, decoded by dpkt; None for anything else or
    garbage. The reference `parse_frame` must agree with (tests/decode/test_wire.py)."""
    try:
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
            return None
        tcp = ip.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            return None
        ip_payload = ip.plen if isinstance(ip, dpkt.ip6.IP6) else ip.len - ip.hl * 4
        return Segment(ts=ts, src=_addr(ip.src, tcp.sport), dst=_addr(ip.dst, tcp.dport),
                       seq=tcp.seq, flags=tcp.flags, payload=bytes(tcp.data),
                       length=ip_payload - tcp.off * 4, ack=tcp.ack)
    except _ERRORS:
        return None


_ETHERTYPE = struct.Struct("!H")
_IP4 = struct.Struct("!BxHxxHxB2x4s4s")
"""version/IHL, total length, flags/fragment offset, protocol, source, destination."""
_IP6 = struct.Struct("!4xHB1x16s16s")
"""payload length, next header, source, destination."""
_TCP = struct.Struct("!HHIIBB")
"""source port, destination port, sequence number, acknowledgement number, data offset, flags."""
_names: dict[tuple[bytes, int], str] = {}


def _name(raw: bytes, port: int) -> str:
    key = (raw, port)
    name = _names.get(key)
    if name is None:
        if len(_names) >= 65536:
            _names.clear()
        name = _names[key] = _addr(raw, port)
    return name


def parse_frame(ts: float, frame: bytes) -> Segment | None:
    """A cut Ethernet frame -> its TCP segment; None for anything else or garbage.

    Most frames the filter passes are headers only (SYN, SYN-ACK, ACK, FIN, RST,
    retransmissions): those are read with struct, a few µs less each than through dpkt's
    objects; frames carrying TLS records, and anything unusual (VLAN tags, IPv6 extension
    headers, IP options, fragments), go to dpkt (`parse_frame_dpkt`)."""
    try:
        (etype,) = _ETHERTYPE.unpack_from(frame, 12)
        if etype == 0x0800:
            vihl, total, frag, proto, src, dst = _IP4.unpack_from(frame, 14)
            if vihl != 0x45 or proto != 6 or frag & 0x3FFF:
                return parse_frame_dpkt(ts, frame)
            l4, ip_payload = 34, total - 20
        elif etype == 0x86DD:
            ip_payload, nxt, src, dst = _IP6.unpack_from(frame, 14)
            if nxt != 6:
                return parse_frame_dpkt(ts, frame)
            l4 = 54
        else:
            return parse_frame_dpkt(ts, frame)
        sport, dport, seq, ack, off, flags = _TCP.unpack_from(frame, l4)
    except struct.error:
        return parse_frame_dpkt(ts, frame)
    thl = (off >> 4) * 4
    if thl < 20 or ip_payload != thl or len(frame) < l4 + thl:
        return parse_frame_dpkt(ts, frame)  # a payload (TLS records), or odd: dpkt decides
    return Segment(ts, _name(src, sport), _name(dst, dport), seq, flags, b"", 0, ack)


@dataclass(slots=True)
class ConnFacts:
    """What the wire showed of one client connection to nginx."""

    client: str
    server: str
    syn_ts: float | None = None
    """The client's first SYN."""
    synack_ts: float | None = None
    ack_ts: float | None = None
    """The client's ACK of the handshake (its first segment after nginx's SYN-ACK)."""
    hello_ts: float | None = None
    server_hello_ts: float | None = None
    tls_done_ts: float | None = None
    """The client's last handshake flight (ChangeCipherSpec / Finished) seen."""
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    alerts: list[tuple[str, TlsAlert]] = field(default_factory=list)
    """(sender "client"/"server", alert) in the clear."""
    retransmits: int = 0
    fin_by: str | None = None
    reset_by: str | None = None
    end_ts: float | None = None
    """When the connection was seen closing (first FIN or RST)."""
    tls_errors: int = 0
    joined: int = 0
    """Exchanges joined to this connection (by the pipeline)."""
    counted: bool = False
    """Requests of it were counted in the kernel (sampled out, no row): it had requests."""
    _seen_seq: set[tuple[str, int]] = field(default_factory=set)
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    """(time, frame) of the packets the filter passed for it, as cut, up to MAX_FRAMES (the
    pcapng export writes them as they were)."""
    _fins: set[str] = field(default_factory=set)
    """Who sent a FIN so far."""
    _hello: bytearray | None = None
    """The client's first handshake flight so far, while its ClientHello is incomplete."""
    _hello_next: int = 0
    """Sequence number of the next byte of it."""

    @property
    def tcp_connect_ms(self) -> float | None:
        if self.syn_ts is None or self.ack_ts is None:
            return None
        return round((self.ack_ts - self.syn_ts) * 1000.0, 3)

    @property
    def tls_handshake_ms(self) -> float | None:
        if self.hello_ts is None:
            return None
        end = self.tls_done_ts or self.server_hello_ts
        if end is None:
            return None
        return round((end - self.hello_ts) * 1000.0, 3)

    @property
    def tls_resumed(self) -> bool | None:
        sh, ch = self.server_hello, self.client_hello
        if sh is None or ch is None:
            return None
        if sh.version == "TLSv1.3":
            return sh.psk
        return bool(ch.session_id) and sh.session_id == ch.session_id

    @property
    def tls_failed(self) -> bool:
        """A fatal alert in the clear, or a ClientHello that got no ServerHello before the end."""
        if any(a.level == 2 for _who, a in self.alerts):
            return True
        return self.client_hello is not None and self.server_hello is None and self.end_ts is not None

    @property
    def failure(self) -> str:
        """The alert that ended the handshake ("server alert: protocol_version"), or ""."""
        for who, a in self.alerts:
            if a.level == 2:
                return f"{who} alert: {a.name}"
        if self.tls_failed:
            return "no ServerHello"
        return ""


class ConnTracker:
    """Connection facts from segments, by (client, server); nginx's side is the listening one."""

    def __init__(self, max_conns: int = 65536) -> None:
        self.conns: dict[tuple[str, str], ConnFacts] = {}
        self.max_conns = max_conns
        self.segments = 0
        self.tls_errors = 0
        self.gave_up = 0
        """ClientHellos that could not be reassembled (a gap, or cut at WIRE_HELLO_MAX)."""
        self.reassembled = 0
        """ClientHellos reassembled from more than one segment."""

    def get(self, client: str, server: str) -> ConnFacts | None:
        return self.conns.get((client, server))

    def feed(self, seg: Segment) -> ConnFacts | None:
        """Account one segment; returns the connection it belongs to (None: not followed)."""
        self.segments += 1
        flags = seg.flags
        if flags & _SYN and not flags & _ACK:
            key = (seg.src, seg.dst)
            facts = self.conns.get(key)
            if facts is None or facts.end_ts is not None:
                if len(self.conns) >= self.max_conns:
                    self.conns.pop(next(iter(self.conns)))
                facts = self.conns[key] = ConnFacts(client=seg.src, server=seg.dst, syn_ts=seg.ts)
            else:
                facts.retransmits += 1  # the SYN again
            return facts
        facts = self.conns.get((seg.src, seg.dst))
        who = "client"
        if facts is None:
            facts = self.conns.get((seg.dst, seg.src))
            who = "server"
            if facts is None:
                return None
        if flags & _SYN:  # SYN-ACK
            if facts.synack_ts is None:
                facts.synack_ts = seg.ts
            else:
                facts.retransmits += 1
            return facts
        if who == "client" and facts.synack_ts is not None and facts.ack_ts is None and flags & _ACK:
            facts.ack_ts = seg.ts
        if seg.payload:
            mark = (who, seg.seq)
            if mark in facts._seen_seq:
                facts.retransmits += 1
            else:
                facts._seen_seq.add(mark)
                self._tls(facts, who, seg)
        elif not flags & (_FIN | _RST) and facts.ack_ts != seg.ts:
            facts.retransmits += 1  # headers only, not the handshake ACK: passed as a retransmission
        if flags & _RST and facts.reset_by is None:
            facts.reset_by = who
            facts.end_ts = facts.end_ts or seg.ts
        if flags & _FIN:
            if who in facts._fins:
                facts.retransmits += 1  # its FIN again
            facts._fins.add(who)
            facts.fin_by = facts.fin_by or who
            facts.end_ts = facts.end_ts or seg.ts
        return facts

    def _tls(self, facts: ConnFacts, who: str, seg: Segment) -> None:
        if who == "client" and (facts._hello is not None
                                or (facts.hello_ts is None and seg.payload[:2] == b"\x16\x03")):
            self._client_flight(facts, seg)
            return
        if seg.payload[0] == 20:  # ChangeCipherSpec: the end of a handshake flight
            if who == "client" and facts.server_hello is not None:
                facts.tls_done_ts = seg.ts
            return
        parsed = parse_tls(seg.payload)
        self._count(facts, parsed)
        if who == "client":
            if facts.server_hello is not None and facts.client_hello is not None:
                facts.tls_done_ts = seg.ts  # TLS 1.2: ClientKeyExchange / Finished
        elif parsed.server_hello is not None and facts.server_hello is None:
            facts.server_hello = parsed.server_hello
            facts.server_hello_ts = seg.ts
        facts.alerts.extend((who, a) for a in parsed.alerts)

    def _count(self, facts: ConnFacts, parsed: TlsParse) -> None:
        facts.tls_errors += parsed.errors
        self.tls_errors += parsed.errors

    def _client_flight(self, facts: ConnFacts, seg: Segment) -> None:
        """The ClientHello, reassembled from as many segments as it spans (the filter passes
        them whole up to WIRE_HELLO_MAX bytes); its time is its first segment's."""
        if facts._hello is None:
            facts._hello = bytearray()
            facts._hello_next = seg.seq
            facts.hello_ts = seg.ts
        if seg.seq != facts._hello_next:  # a gap (a segment lost to the socket's queue)
            self.gave_up += 1
            self._count(facts, TlsParse(errors=1))
            facts._hello = None
            return
        facts._hello += seg.payload
        facts._hello_next = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
        parsed = parse_client_flight(bytes(facts._hello))
        if parsed is None:
            if 0 <= len(seg.payload) < seg.length or len(facts._hello) >= HELLO_MAX:
                self.gave_up += 1  # cut in the kernel: the rest will not come
                self._count(facts, TlsParse(errors=1))
                facts._hello = None
            return
        if len(facts._hello) > len(seg.payload):
            self.reassembled += 1
        facts._hello = None
        self._count(facts, parsed)
        facts.client_hello = parsed.client_hello
        facts.alerts.extend(("client", a) for a in parsed.alerts)

    def expire(self, before: float) -> list[ConnFacts]:
        """Forget connections that ended before `before`; returns them."""
        gone = [k for k, f in self.conns.items() if f.end_ts is not None and f.end_ts < before]
        return [self.conns.pop(k) for k in gone]
