"""Cut frames -> segments (dpkt) -> connection facts (decode/wire.py); fuzzed."""

from __future__ import annotations

import socket

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.decode.wire import ConnTracker, parse_frame

C, S = ("127.0.0.1", 40000), ("127.0.0.1", 8443)
SYN, ACK, FIN, RST, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH


def frame(src: tuple[str, int], dst: tuple[str, int], flags: int, seq: int, payload: bytes = b"",
          v6: bool = False) -> bytes:
    tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq, flags=flags, data=payload)
    if v6:
        ip: dpkt.Packet = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src[0]),
                                       dst=socket.inet_pton(socket.AF_INET6, dst[0]), nxt=6, hlim=64,
                                       data=tcp, plen=len(bytes(tcp)))
        etype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=6, data=tcp)
        ip.len = len(bytes(ip))
        etype = dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=b"\0" * 6, dst=b"\0" * 6, type=etype, data=ip))


def test_handshake_alert_and_reset() -> None:
    t = ConnTracker()
    seq = [
        (1.000, C, S, SYN, 100, b""),
        (1.001, C, S, SYN, 100, b""),  # the SYN again: a retransmission
        (1.002, S, C, SYN | ACK, 500, b""),
        (1.003, C, S, ACK, 101, b""),
        (1.004, C, S, ACK | PSH, 101, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"),  # cut hello
        (1.010, S, C, ACK | PSH, 501, b"\x15\x03\x03\x00\x02\x02\x28"),
        (1.011, C, S, RST | ACK, 111, b""),
    ]
    for ts, src, dst, flags, sq, payload in seq:
        seg = parse_frame(ts, frame(src, dst, flags, sq, payload))
        assert seg is not None
        t.feed(seg)
    f = t.get("127.0.0.1:40000", "127.0.0.1:8443")
    assert f is not None
    assert f.tcp_connect_ms == 3.0
    assert f.retransmits == 1
    assert f.reset_by == "client"
    assert f.tls_failed and f.failure == "server alert: handshake_failure"
    assert t.expire(1.5) == [f] and t.get("127.0.0.1:40000", "127.0.0.1:8443") is None


def test_ipv6_addresses() -> None:
    seg = parse_frame(2.0, frame(("::1", 5000), ("::1", 443), SYN, 1, v6=True))
    assert seg is not None and (seg.src, seg.dst) == ("[::1]:5000", "[::1]:443")


def test_unknown_connection_and_non_tcp() -> None:
    t = ConnTracker()
    seg = parse_frame(1.0, frame(C, S, ACK | FIN, 5))
    assert seg is not None and t.feed(seg) is None
    udp = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=dpkt.ip.IP(p=17, data=dpkt.udp.UDP()))
    assert parse_frame(1.0, bytes(udp)) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_frames_never_raise(data: bytes) -> None:
    t = ConnTracker()
    first = parse_frame(0.0, frame(C, S, SYN, 1))
    assert first is not None
    t.feed(first)
    for raw in (data, frame(C, S, SYN, 1)[:14] + data, frame(C, S, ACK | PSH, 2, b"\x16\x03\x01" + data)):
        seg = parse_frame(0.0, raw)
        if seg is not None:
            t.feed(seg)
