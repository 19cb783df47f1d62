"""The status nginx takes from upstreams without an HTTP status line (decode.cgihead)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from ngxscope.decode.cgihead import fastcgi_stdout, non_http_status


def _record(kind: int, content: bytes, padding: int = 0) -> bytes:
    return struct.pack(">BBHHBx", 1, kind, 1, len(content), padding) + content + b"\0" * padding


FCGI_REQUEST = _record(1, b"\0\1\0\0\0\0\0\0")


def test_fastcgi_status_location_and_default() -> None:
    resp = _record(6, b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\nbody", 3) + _record(3, b"\0" * 8)
    assert non_http_status(FCGI_REQUEST, resp) == (404, "Status: 404 Not Found\r\nContent-Type: text/html")
    split = _record(6, b"Location: http://x/\r\n") + _record(7, b"warning") + _record(6, b"\r\nbody")
    assert non_http_status(FCGI_REQUEST, split) == (302, "Location: http://x/")
    assert non_http_status(FCGI_REQUEST, _record(6, b"Content-Type: text/html\n\nok"))[0] == 200  # type: ignore[index]
    assert non_http_status(FCGI_REQUEST, _record(6, b"Content-Type: text/html\r\n")) is None  # head not whole yet
    assert fastcgi_stdout(_record(6, b"abc")[:-1]) == b""  # a cut record is not taken


def test_scgi_uwsgi_memcached_and_http09() -> None:
    scgi = b"70:CONTENT_LENGTH\x000\x00SCGI\x001\x00,"
    assert non_http_status(scgi, b"Status: 503 Busy\r\n\r\n") == (503, "Status: 503 Busy")
    assert non_http_status(scgi, b"HTTP/1.1 200 OK\r\n\r\n") is None  # a status line: parsed as HTTP
    assert non_http_status(b"\x00\x10\x00\x00QUERY_STRING", b"Content-Type: text/plain\n\nhi") == (
        200, "Content-Type: text/plain")
    assert non_http_status(b"get key\r\n", b"VALUE key 0 2\r\nok\r\nEND\r\n") == (200, "VALUE key 0 2")
    assert non_http_status(b"get key\r\n", b"END\r\n") == (404, "END")
    assert non_http_status(b"GET / HTTP/1.0\r\n\r\n", b"just bytes") == (200, "")
    assert non_http_status(b"GET / HTTP/1.0\r\n\r\n", b"HTT") is None  # may still be a status line


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_never_raises(request: bytes, response: bytes) -> None:
    out = non_http_status(request, response)
    assert out is None or 0 <= out[0] <= 999
