"""HTTP/1 head parsing: today's parser (decode.http1.parse_head) against dpkt.http, for
bench/decoder.py's `heads` table.

Speed: CPU per head over a corpus of ordinary request and response heads (curl, a browser,
wrk, nginx's and an upstream's responses), both parsers on the same heads in the same run.

Tolerance: heads nginx accepts (asked of a real nginx when one is given: a case counts only
if nginx did not answer 400), each parsed by both; a parser "keeps" a case when it returns
the request line's three parts and every header line as sent (name case, wire order,
duplicates, value bytes). What ngxscope shows and exports is the head as sent, so a parser
that lowercases, merges or drops bytes loses facts even where it does not raise.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

import dpkt

from ngxscope.decode.http1 import HeadError, parse_head

__all__ = ["ORDINARY", "TOLERANCE", "heads_table"]

_CHROME = (b"GET /static/page.html?utm_source=x&id=42 HTTP/1.1\r\nHost: shop.example.test\r\n"
           b"Connection: keep-alive\r\nsec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
           b"sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           b"Chrome/131.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;"
           b"q=0.9,image/avif,image/webp,*/*;q=0.8\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n"
           b"Sec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
           b"Accept-Language: en-GB,en;q=0.9\r\nCookie: session=7f3c9a; theme=dark; _ga=GA1.2.3.4\r\n")
ORDINARY: list[bytes] = [
    b"GET /static/small.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n",  # wrk
    b"GET /api/items?id=3 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n",
    _CHROME,
    b"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: 17\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 22:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nLast-Modified: Sun, 06 Dec 2026 21:00:00 GMT\r\n"
    b"Connection: keep-alive\r\nETag: \"6753a0b0-c\"\r\nAccept-Ranges: bytes\r\n",
    b"HTTP/1.1 201 Created\r\nServer: nginx/1.22.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nSet-Cookie: a=1; Path=/\r\n"
    b"Set-Cookie: b=2; Path=/; HttpOnly\r\nX-Upstream: 127.0.0.1:9001\r\n",
]

TOLERANCE: dict[str, bytes] = {
    "bare LF line ends": b"GET /lf HTTP/1.1\nHost: localhost\nX-A: 1\n",
    "name case as sent": b"GET /case HTTP/1.1\r\nhOsT: localhost\r\nX-MiXeD: v\r\n",
    "duplicates interleaved": b"GET /dup HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n",
    "UTF-8 value": "GET /utf8 HTTP/1.1\r\nHost: localhost\r\nX-Name: café ☕\r\n".encode(),
    "latin-1 byte in value": b"GET /latin1 HTTP/1.1\r\nHost: localhost\r\nX-Name: caf\xe9\r\n",
    "UTF-8 in the target": "GET /caf\u00e9?q=\u2615 HTTP/1.1\r\nHost: localhost\r\n".encode(),
    "empty value": b"GET /empty HTTP/1.1\r\nHost: localhost\r\nX-Empty:\r\n",
    "tabs around a value": b"GET /tabs HTTP/1.1\r\nHost: localhost\r\nX-T:\tv w\t\r\n",
    "underscore name (ignored by nginx)": b"GET /us HTTP/1.1\r\nHost: localhost\r\nX_Under: 1\r\n",
    "invalid name char (ignored by nginx)": b"GET /at HTTP/1.1\r\nHost: localhost\r\nX@Y: 1\r\n",
    "method dpkt does not list": b"PURGE /cache/x HTTP/1.1\r\nHost: localhost\r\n",
    "absolute-form target": b"GET http://localhost/abs HTTP/1.1\r\nHost: localhost\r\n",
    "HTTP/1.0 without Host": b"GET /old HTTP/1.0\r\nUser-Agent: old\r\n",
    "8 KiB header": b"GET /big HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 7000 + b"\r\n",
}


def _reference(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """The head as sent: request-line parts and every header line's (name, value)."""
    lines = head.decode("latin-1").replace("\r\n", "\n").rstrip("\n").split("\n")
    headers = [(n, v.strip(" \t")) for n, _, v in (ln.partition(":") for ln in lines[1:])]
    return lines[0].split(" ", 2), headers


def _ours(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    return parse_head(head)


def _dpkt(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    msg: Any
    # dpkt parses the body too: give it what the head promises (an empty chunked body, or
    # Content-Length zero bytes), so both parsers do the same work
    cl = _CL.search(head)
    body = b"0\r\n\r\n" if b"chunked" in head else bytes(int(cl.group(1)) if cl else 0)
    if head.startswith(b"HTTP/"):
        msg = dpkt.http.Response(head + b"\r\n" + body)
        first = [f"HTTP/{msg.version}", msg.status, msg.reason]
    else:
        msg = dpkt.http.Request(head + b"\r\n" + body)
        first = [msg.method, msg.uri, f"HTTP/{msg.version}"]
    headers: list[tuple[str, str]] = []
    for name, value in msg.headers.items():  # lowercased, duplicates merged into lists
        for v in value if isinstance(value, list) else [value]:
            headers.append((name, v))
    return first, headers


_CL = re.compile(rb"(?i)\ncontent-length: *(\d+)")

PARSERS: dict[str, Callable[[bytes], tuple[list[str], list[tuple[str, str]]]]] = {
    "ngxscope": _ours, "dpkt": _dpkt}


def _nginx_accepts(port: int, head: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + b"Connection: close\r\n\r\n")
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return bool(buf) and not buf.startswith(b"HTTP/1.1 400")


def _per_head_us(fn: Callable[[bytes], object], heads: list[bytes], repeat: int) -> float:
    best = float("inf")
    rounds = 2000
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(rounds):
            for h in heads:
                fn(h)
        best = min(best, time.process_time() - t0)
    return best / (rounds * len(heads)) * 1e6


def heads_table(repeat: int = 3, nginx_port: int | None = None) -> dict[str, Any]:
    """Print and return speed and tolerance of both parsers."""
    for h in ORDINARY:  # the speed corpus must be parsed right by both, or the timing lies
        for name, fn in PARSERS.items():
            first, headers = fn(h)
            ref_first, ref_headers = _reference(h)
            assert [str(x) for x in first] == ref_first, (name, first)
            assert [(k.lower(), v) for k, v in headers] == [(k.lower(), v) for k, v in ref_headers] \
                or name == "dpkt", (name, headers)
    speed = {name: _per_head_us(fn, ORDINARY, repeat) for name, fn in PARSERS.items()}
    cases: dict[str, dict[str, str]] = {}
    for case, head in TOLERANCE.items():
        if nginx_port is not None and not _nginx_accepts(nginx_port, head):
            cases[case] = {"nginx": "400"}
            continue
        row = {"nginx": "accepted" if nginx_port is not None else "not asked"}
        want = _reference(head)
        for name, fn in PARSERS.items():
            try:
                got = fn(head)
            except (HeadError, dpkt.UnpackError, ValueError) as exc:
                row[name] = f"raises ({str(exc)[:40]})"
                continue
            first = [str(x) for x in got[0]]
            lower = [(k.lower(), v) for k, v in got[1]]
            if (first, got[1]) == want:
                row[name] = "kept"
            elif first == want[0] and lower == [(k.lower(), v) for k, v in want[1]]:
                row[name] = "lowercased"
            else:
                row[name] = "changed"
        cases[case] = row
    print(f"\nHTTP/1 heads: µs per head ({len(ORDINARY)} ordinary heads, best of {repeat}): "
          + ", ".join(f"{n} {v:.2f}" for n, v in speed.items()))
    print(f"{'case nginx accepts':38} {'nginx':9} {'ngxscope':10} dpkt")
    for case, row in cases.items():
        print(f"{case:38} {row['nginx']:9} {row.get('ngxscope', '-'):10} {row.get('dpkt', '-')}")
    kept = {n: sum(1 for r in cases.values() if r.get(n) == "kept") for n in PARSERS}
    print("kept as sent: " + ", ".join(f"{n} {k}/{len(cases)}" for n, k in kept.items()))
    return {"us_per_head": speed, "tolerance": cases, "kept": kept}
