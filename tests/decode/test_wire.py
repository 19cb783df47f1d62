"""Cut frames -> segments (dpkt) -> connection facts (decode/wire.py); fuzzed."""

from __future__ import annotations

import socket
from typing import Any

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.decode.wire import ConnTracker, parse_frame, parse_frame_dpkt

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


def _big_hello(alpn_count: int = 40) -> bytes:
    """A real OpenSSL ClientHello made big by many long ALPN names (> 2 KiB)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([f"proto-{i:02d}-" + "x" * 60 for i in range(alpn_count)] + ["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="big.example.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _feed_hello(t: ConnTracker, pieces: list[bytes], lengths: list[int] | None = None,
                gap: int = 0) -> None:
    for ts, src, dst, flags, sq in [(1.0, C, S, SYN, 100), (1.001, S, C, SYN | ACK, 500), (1.002, C, S, ACK, 101)]:
        seg = parse_frame(ts, frame(src, dst, flags, sq))
        assert seg is not None
        t.feed(seg)
    seq = 101
    for i, piece in enumerate(pieces):
        seg = parse_frame(1.01 + i / 1000, frame(C, S, ACK | PSH, seq, piece))
        assert seg is not None
        if lengths is not None:  # as the filter cut it: the IP header says more
            seg = type(seg)(seg.ts, seg.src, seg.dst, seg.seq, seg.flags, seg.payload, lengths[i])
        t.feed(seg)
        seq += (len(piece) if lengths is None else lengths[i]) + gap


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=6))
def test_client_hello_split_across_segments(cuts: list[int]) -> None:
    hello = _big_hello()
    assert len(hello) > 2048
    # the filter knows a ClientHello by its first 9 bytes (record + handshake header)
    points = sorted({9 + c % (len(hello) - 9) for c in cuts})
    pieces = [hello[a:b] for a, b in zip([0, *points], [*points, len(hello)], strict=True)]
    t = ConnTracker()
    _feed_hello(t, pieces)
    f = t.get("127.0.0.1:40000", "127.0.0.1:8443")
    assert f is not None and f.client_hello is not None, pieces
    assert f.client_hello.sni == "big.example.test"
    assert f.client_hello.alpn[-1] == "http/1.1" and len(f.client_hello.alpn) == 41
    assert f.hello_ts == 1.01 and f.tls_errors == 0 and t.gave_up == 0
    assert t.reassembled == (1 if len(pieces) > 1 else 0)


def test_client_hello_cut_or_with_a_gap_is_counted() -> None:
    hello = _big_hello()
    t = ConnTracker()
    _feed_hello(t, [hello[:1000]], lengths=[len(hello)])  # cut: the rest will never come
    f = t.get("127.0.0.1:40000", "127.0.0.1:8443")
    assert f is not None and f.client_hello is None and t.gave_up == 1 and f.tls_errors == 1
    t = ConnTracker()
    _feed_hello(t, [hello[:1000], hello[1500:]], gap=500)  # a segment missing
    f = t.get("127.0.0.1:40000", "127.0.0.1:8443")
    assert f is not None and f.client_hello is None and t.gave_up == 1


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([(C, S), (S, C), (("::1", 5000), ("::1", 443)), (("10.0.0.1", 1), ("10.0.0.2", 65535))]),
       st.integers(0, 255), st.integers(0, 2**32 - 1), st.sampled_from([b"", b"\x16\x03\x01\x00\x05hello", b"x"]),
       st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=3), st.integers(0, 8))
def test_struct_fast_path_equals_dpkt(ends: Any, flags: int, seq: int, payload: bytes,
                                      mutations: list[tuple[int, int]], cut: int) -> None:
    """parse_frame (struct for header-only frames) gives what dpkt gives, also on damaged,
    padded or cut frames."""
    src, dst = ends
    raw = bytearray(frame(src, dst, flags, seq, payload, v6=":" in src[0]))
    for pos, value in mutations:
        if pos < len(raw):
            raw[pos] = value
    data = bytes(raw[: len(raw) - cut]) if cut < 8 else bytes(raw) + bytes(cut)  # cut, or padded
    assert parse_frame(1.5, data) == parse_frame_dpkt(1.5, data)
