"""The status nginx takes from an upstream that does not answer with an HTTP status line:
FastCGI, SCGI and uwsgi peers (CGI headers), memcached, and HTTP/0.9 answers to proxy_pass.

nginx's rules ($upstream_status): a CGI-style head gives the "Status:" header's code, else
302 when it has "Location:", else 200 (ngx_http_fastcgi/scgi/uwsgi_process_header); a
memcached "VALUE" line is 200 and "END" 404; a proxied answer without a status line is an
HTTP/0.9 response, 200. The protocol is told by the first bytes nginx sent the peer.
"""

from __future__ import annotations

import re
import struct

from .http1 import find_head_end

__all__ = ["fastcgi_stdout", "non_http_status"]

_FCGI_HEADER = struct.Struct(">BBHHBx")
_FCGI_STDOUT = 6
_SCGI_START = re.compile(rb"\d+:")
_METHOD = re.compile(rb"[A-Z]+ ")


def fastcgi_stdout(data: bytes) -> bytes:
    """The FCGI_STDOUT content of the whole records at the start of `data`, in order."""
    out = bytearray()
    pos = 0
    while pos + 8 <= len(data):
        version, kind, _rid, length, padding = _FCGI_HEADER.unpack_from(data, pos)
        if version != 1 or pos + 8 + length > len(data):
            break
        if kind == _FCGI_STDOUT:
            out += data[pos + 8 : pos + 8 + length]
        pos += 8 + length + padding
    return bytes(out)


def _cgi_status(data: bytes) -> tuple[int, str] | None:
    end = find_head_end(data)
    if end < 0:
        return None
    head = data[:end].rstrip(b"\r\n")
    status = None
    location = False
    for raw in head.split(b"\n"):
        name, sep, value = raw.rstrip(b"\r").partition(b":")
        if not sep:
            continue
        lname = name.strip().lower()
        if lname == b"status":
            code = value.strip()[:3]
            status = int(code) if code.isdigit() else None
        elif lname == b"location":
            location = True
    if status is None:
        status = 302 if location else 200
    return status, head.decode("latin-1")


def non_http_status(request: bytes, response: bytes) -> tuple[int, str] | None:
    """(status, head) as nginx takes them, for a response that does not start with an HTTP
    status line, to the request that began with `request`; None: not enough bytes yet, or a
    response nginx would parse as HTTP (the caller's)."""
    if response.startswith(b"HTTP/") or (len(response) < 5 and b"HTTP/".startswith(response)):
        return None
    if request.startswith(b"\x01\x01"):  # FastCGI: FCGI_BEGIN_REQUEST, version 1
        return _cgi_status(fastcgi_stdout(response))
    if request[:4] in (b"get ", b"gets"):  # memcached
        nl = response.find(b"\n")
        if nl < 0:
            return None
        line = response[:nl].rstrip(b"\r")
        if line.startswith(b"VALUE "):
            return 200, line.decode("latin-1")
        if line == b"END":
            return 404, line.decode("latin-1")
        return None
    if _SCGI_START.match(request) or request[:1] == b"\x00":  # SCGI netstring, uwsgi packet
        return _cgi_status(response)
    if _METHOD.match(request):  # proxy_pass: an HTTP/0.9 answer
        return 200, ""
    return None
