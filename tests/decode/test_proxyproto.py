"""decode.proxyproto: PROXY protocol headers (version 1 text, version 2 binary)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from ngxscope.decode.proxyproto import V2_SIGNATURE, ProxyHeader, parse_proxy_header


def test_v1() -> None:
    data = b"PROXY TCP4 203.0.113.9 127.0.0.1 40001 443\r\nGET / HTTP/1.1\r\n"
    assert parse_proxy_header(data) == ProxyHeader(44, "203.0.113.9:40001", 1)
    assert parse_proxy_header(b"PROXY TCP6 2001:db8::7 ::1 40002 443\r\n") == ProxyHeader(38, "[2001:db8::7]:40002", 1)
    assert parse_proxy_header(b"PROXY UNKNOWN\r\nGET") == ProxyHeader(15, "", 1)
    assert parse_proxy_header(b"PROXY TCP4 1.2.3") is True  # more bytes needed
    assert parse_proxy_header(b"PROXY TCP4 999.2.3.4 1.1.1.1 1 2\r\n") is False
    assert parse_proxy_header(b"GET / HTTP/1.1\r\n") is None
    assert parse_proxy_header(b"") is None


def test_v2() -> None:
    body = bytes([198, 51, 100, 20]) + bytes(4) + struct.pack(">HH", 40003, 443)
    data = V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(body)) + body + b"GET"
    assert parse_proxy_header(data) == ProxyHeader(28, "198.51.100.20:40003", 2)
    body6 = bytes.fromhex("20010db8000000000000000000000008") + bytes(16) + struct.pack(">HH", 40004, 443)
    data6 = V2_SIGNATURE + b"\x21\x21" + struct.pack(">H", len(body6)) + body6
    assert parse_proxy_header(data6) == ProxyHeader(52, "[2001:db8::8]:40004", 2)
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse_proxy_header(local) == ProxyHeader(16, "", 2)
    assert parse_proxy_header(data[:20]) is True
    assert parse_proxy_header(V2_SIGNATURE[:5]) is True
    assert parse_proxy_header(V2_SIGNATURE + b"\x11\x11\x00\x00") is False


@given(st.binary(max_size=80))
def test_never_raises(data: bytes) -> None:
    for prefix in (b"", b"PROXY ", V2_SIGNATURE):
        got = parse_proxy_header(prefix + data)
        assert got in (None, True, False) or (isinstance(got, ProxyHeader) and got.length <= len(prefix + data))
