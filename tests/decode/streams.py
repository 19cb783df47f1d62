"""Recorded HTTP/1.x byte streams, as nginx reads and writes them, and an event builder.

`REQUEST_STREAMS` maps a name to the bytes a client sent on one connection and the requests
`RequestStream` must frame from them (`Req`, or None where the expectation is "malformed").
`build_events` turns the exchanges of one connection into the `RawEvent`s the capture would
deliver (OPEN, RECV/SEND with stream offsets, EV_UPSTREAM, REQ_DONE with nginx's counters,
CLOSE), with splits, payload caps and losses; `interleave` merges several connections.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ngxscope.capture.events import (
    EV_CLOSE,
    EV_OPEN,
    EV_RECV,
    EV_REQ_DONE,
    EV_SEND,
    EV_UPSTREAM,
    EVF_CLIENT,
    RawEvent,
)
from ngxscope.decode.assembler import Assembler
from ngxscope.model import Exchange

BASE_TS = 1_700_000_000.0
"""Event times start here (far from the Assembler's attach_ts, so no 'joined midway')."""

Headers = tuple[tuple[str, str], ...]


# -- requests -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Req:
    """One request as it crossed the wire, with what the parser must report for it."""

    method: str
    target: str
    version: str
    headers: Headers
    body: bytes
    """Body in wire form (chunked framing and trailers kept)."""
    head_bytes: int
    wire: bytes

    @property
    def body_size(self) -> int:
        return len(self.body)

    @property
    def total_bytes(self) -> int:
        return self.head_bytes + len(self.body)


def request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> Req:
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    raw_head = (head + "\r\n").encode("latin-1")
    return Req(method, target, version, tuple(headers), body, len(raw_head), raw_head + body)


def chunked(chunks: Iterable[bytes], *, ext: str = "", trailers: Sequence[str] = ()) -> bytes:
    """A chunked body: every chunk with `ext` appended to its size line, then 0 and trailers."""
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext.encode(), c) for c in chunks)
    return out + b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"


UA = ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
ACCEPT = ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")

GET_INDEX = request("GET", "/", [("Host", "shop.example.test"), UA, ACCEPT,
                                 ("Accept-Encoding", "gzip, deflate, br"), ("Connection", "keep-alive")])
GET_ITEMS = request("GET", "/api/items?page=2&sort=-price", [("Host", "shop.example.test"), UA,
                    ("Accept", "application/json"), ("Cookie", "session=s000042; theme=dark")])
GET_LOGO = request("GET", "/static/logo.png", [("Host", "shop.example.test"), UA,
                   ("If-None-Match", '"5f1a-12c"'), ("Referer", "http://shop.example.test/")])
BINARY = bytes(range(256)) + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\x00\xff\r\n"
POST_UPLOAD = request("POST", "/upload?name=blob.bin", [("Host", "shop.example.test"),
                      ("Content-Type", "application/octet-stream"),
                      ("Content-Length", str(len(BINARY)))], BINARY)
CHUNKED_BODY = chunked([b'{"items": [', b"1,2,\r\n3", b"]}"], ext=";ieof=1")
CHUNKED_BODY_TRAILERS = (b"7;name=\"a b\"\r\nabc\r\nde\r\n" b"A\r\n0123456789\r\n"
                         b"0\r\nX-Checksum: 1234\r\nX-Trace: t1\r\n\r\n")
POST_CHUNKED = request("POST", "/api/items", [("Host", "shop.example.test"),
                       ("Content-Type", "application/json"),
                       ("Transfer-Encoding", "chunked")], CHUNKED_BODY)
PUT_CHUNKED_TRAILERS = request("PUT", "/files/a.txt", [("Host", "files.example.test"),
                               ("Transfer-Encoding", "gzip, chunked"), ("Trailer", "X-Checksum")],
                               CHUNKED_BODY_TRAILERS)
HEAD_INDEX = request("HEAD", "/index.html", [("Host", "shop.example.test"), ("User-Agent", "curl/8.5.0")])
POST_EXPECT = request("POST", "/api/orders", [("Host", "shop.example.test"), ("User-Agent", "curl/8.5.0"),
                      ("Content-Type", "application/x-www-form-urlencoded"),
                      ("Content-Length", "23"), ("Expect", "100-continue")], b"item=42&qty=1&note=a%0D")
DELETE_CLOSE = request("DELETE", "/api/items/7", [("Host", "shop.example.test"), ("Connection", "close")])
GET_10 = request("GET", "/legacy", [("User-Agent", "Wget/1.12")], version="HTTP/1.0")
OPTIONS_STAR = request("OPTIONS", "*", [("Host", "shop.example.test")])
GET_ABSOLUTE = request("GET", "http://other.example.test:8080/p?q=1", [("Accept", "*/*")])
_folded_wire = b"GET /folded HTTP/1.1\r\nHost: a\r\nX-Long: part1\r\n  part2\r\nAccept: */*\r\n\r\n"
GET_FOLDED = Req("GET", "/folded", "HTTP/1.1", (("Host", "a"), ("X-Long", "part1 part2"), ("Accept", "*/*")),
                 b"", len(_folded_wire), _folded_wire)
_lf_wire = b"GET /lf HTTP/1.1\nHost: lf.example.test\nX-Empty:\n\n"
GET_BARE_LF = Req("GET", "/lf", "HTTP/1.1", (("Host", "lf.example.test"), ("X-Empty", "")), b"",
                  len(_lf_wire), _lf_wire)


def wire(*reqs: Req) -> bytes:
    return b"".join(r.wire for r in reqs)


REQUEST_STREAMS: dict[str, tuple[bytes, list[Req]]] = {
    "keepalive_gets": (wire(GET_INDEX, GET_ITEMS, GET_LOGO), [GET_INDEX, GET_ITEMS, GET_LOGO]),
    "post_binary_then_get": (wire(POST_UPLOAD, GET_ITEMS), [POST_UPLOAD, GET_ITEMS]),
    "chunked_ext": (wire(POST_CHUNKED, GET_INDEX), [POST_CHUNKED, GET_INDEX]),
    "chunked_trailers": (wire(PUT_CHUNKED_TRAILERS, HEAD_INDEX), [PUT_CHUNKED_TRAILERS, HEAD_INDEX]),
    "head": (wire(HEAD_INDEX), [HEAD_INDEX]),
    "expect_continue": (wire(POST_EXPECT, GET_LOGO), [POST_EXPECT, GET_LOGO]),
    "http10_close": (wire(GET_10), [GET_10]),
    "delete_close": (wire(DELETE_CLOSE), [DELETE_CLOSE]),
    "options_absolute": (wire(OPTIONS_STAR, GET_ABSOLUTE), [OPTIONS_STAR, GET_ABSOLUTE]),
    "folded_and_bare_lf": (wire(GET_FOLDED, GET_BARE_LF), [GET_FOLDED, GET_BARE_LF]),
    "mixed_pipeline": (wire(GET_INDEX, POST_UPLOAD, POST_CHUNKED, HEAD_INDEX, PUT_CHUNKED_TRAILERS, GET_10),
                       [GET_INDEX, POST_UPLOAD, POST_CHUNKED, HEAD_INDEX, PUT_CHUNKED_TRAILERS, GET_10]),
}

CRLF_BETWEEN = (POST_UPLOAD.wire + b"\r\n" + GET_ITEMS.wire, [POST_UPLOAD, GET_ITEMS])
"""Old clients send a stray CRLF after a POST body; nginx skips it before the next request."""

TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100f8010000f40303"  # record header, handshake header, client version
    "6b2e9f0a1c3d5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"  # random
    "20" + "e0" * 32 +  # session id
    "0008130213031301c02f0100"  # cipher suites, compression
    "00a30000001600140000117368"  # extensions: server_name...
) + b"op.example.test" + bytes(120)
RANDOM_BYTES = random.Random(20240501).randbytes(600)

MALFORMED_STREAMS: dict[str, bytes] = {
    "foo": b"FOO\r\n\r\n",
    "bad_header_line": b"GET /x HTTP/1.1\r\nHost: a\r\nthis is no header\r\n\r\n",
    "negative_cl": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
    "bad_cl": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12abc\r\n\r\n",
    "no_version": b"GET /x\r\nHost: a\r\n\r\n",
    "bad_chunk_size": b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
}
"""Requests nginx answers 400; each followed by a valid request in the split tests."""

GARBAGE_STREAMS: dict[str, bytes] = {"tls_client_hello": TLS_CLIENT_HELLO, "random": RANDOM_BYTES}


# -- responses ------------------------------------------------------------------------------
def response(
    status: int,
    reason: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    version: str = "HTTP/1.1",
    *,
    content_length: bool = True,
) -> bytes:
    hs = [("Server", "nginx/1.22.1"), ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"), *headers]
    if content_length and body and not any(k.lower() == "transfer-encoding" for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    head = f"{version} {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + body


def ok(marker: str) -> bytes:
    """A 200 whose body names the request it answers (to catch wrong pairing)."""
    return response(200, "OK", [("Content-Type", "text/plain")], f"resp:{marker}\n".encode())


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED_RESPONSE = response(200, "OK", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
                            chunked([b'{"resp":', b'"/api/items"}']))
HEAD_RESPONSE = response(200, "OK", [("Content-Type", "text/html"), ("Content-Length", "1234")])
NOT_MODIFIED = response(304, "Not Modified", [("ETag", '"5f1a-12c"')])
NO_CONTENT = response(204, "No Content", [("X-Deleted", "7")])
CREATED = response(201, "Created", [("Location", "/api/orders/9")], b"resp:/api/orders\n")
BAD_REQUEST = response(400, "Bad Request", [("Content-Type", "text/html"), ("Connection", "close")],
                       b"<html><body>400 Bad Request</body></html>\r\n")
CLOSE_RESPONSE = response(200, "OK", [("Connection", "close")], b"resp:/api/items/7\n")
HTTP10_RESPONSE = response(200, "OK", [("Connection", "close")], b"resp:/legacy\n", version="HTTP/1.1")


# -- events ---------------------------------------------------------------------------------
Step = tuple[str, bytes]
"""("recv", bytes) or ("send", bytes)."""
ExchangeSpec = tuple[bytes, bytes | None] | list[Step]
"""(request, response) — response None: never answered — or explicit recv/send steps."""
Splitter = Callable[[bytes], Sequence[int]]


def every(n: int) -> Splitter:
    """Cut every I/O buffer into pieces of at most `n` bytes."""
    return lambda data: range(n, len(data), n)


def at(*positions: int) -> Splitter:
    """Cut every I/O buffer at these positions (those inside it)."""
    return lambda data: [p for p in positions if 0 < p < len(data)]


def _pieces(data: bytes, split: Splitter | None) -> list[bytes]:
    cuts = sorted(set(split(data))) if split else []
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def build_events(
    exchanges: Sequence[ExchangeSpec],
    *,
    pid: int = 4242,
    fd: int = 9,
    conn_ts: int = 1_000_001,
    t0: float = BASE_TS,
    step: float = 0.001,
    split: Splitter | None = None,
    cap: int | None = None,
    proxied: Iterable[int] = (),
    pipeline: Sequence[int] | None = None,
    peer: str = "10.0.0.7:51234",
    local: str = "10.0.0.1:8080",
    flags: int = EVF_CLIENT,
    close: bool = True,
) -> list[RawEvent]:
    """The events of one client connection carrying `exchanges` in order.

    `pipeline` gives group sizes: the requests of a group reach nginx in one read before it
    answers the first of them. `cap` cuts captured payloads as the BPF payload cap does.
    """
    proxied = set(proxied)
    events: list[RawEvent] = []
    counters = {"ts": t0, "read": 0, "sent": 0, "seq": 0}

    def ev(kind: int, **kw: object) -> RawEvent:
        fields: dict = {"offset": 0, "aux": 0, "length": 0, **kw}
        e = RawEvent(kind=kind, ts=counters["ts"], pid=pid, fd=fd, conn_ts=conn_ts, flags=flags, **fields)
        counters["ts"] += step
        events.append(e)
        return e

    def io(kind: int, data: bytes) -> None:
        key = "read" if kind == EV_RECV else "sent"
        for piece in _pieces(data, split):
            captured = piece if cap is None else piece[:cap]
            ev(kind, offset=counters[key], length=len(piece), data=captured)
            counters[key] += len(piece)

    ev(EV_OPEN, peer=peer, local=local)
    groups = list(pipeline) if pipeline else [1] * len(exchanges)
    assert sum(groups) == len(exchanges), "pipeline groups must cover every exchange"
    i = 0
    for size in groups:
        group = exchanges[i : i + size]
        if size > 1:
            io(EV_RECV, b"".join(spec[0] for spec in group))  # type: ignore[misc]
        for j, spec in enumerate(group, start=i):
            steps: list[Step] = list(spec) if isinstance(spec, list) else (  # type: ignore[arg-type]
                [("recv", spec[0])] + ([("send", spec[1])] if spec[1] is not None else []))
            if size > 1:
                steps = [s for s in steps if s[0] != "recv"]
            for what, data in steps:
                if what == "send" and j in proxied:  # nginx went upstream before answering
                    ev(EV_UPSTREAM, peer="127.0.0.1:8081")
                    proxied.discard(j)
                io(EV_RECV if what == "recv" else EV_SEND, data)
            if any(what == "send" for what, _ in steps):
                counters["seq"] += 1
                ev(EV_REQ_DONE, offset=counters["read"], aux=counters["sent"], seq=counters["seq"] % 65536)
        i += size
    if close:
        ev(EV_CLOSE, offset=counters["read"], aux=counters["sent"])
    return events


def drop(events: Sequence[RawEvent], pred: Callable[[int, RawEvent], bool]) -> list[RawEvent]:
    """The events without those for which pred(index, event) holds (ring-buffer loss)."""
    return [e for i, e in enumerate(events) if not pred(i, e)]


def nth(events: Sequence[RawEvent], kind: int, n: int) -> int:
    """Index of the n-th (0-based) event of `kind`."""
    return [i for i, e in enumerate(events) if e.kind == kind][n]


def interleave(conns: Sequence[Sequence[RawEvent]], order: Sequence[int]) -> list[RawEvent]:
    """Merge per-connection event lists; `order` names the connection to take from next."""
    its = [iter(c) for c in conns]
    out = [next(its[k]) for k in order]
    for it in its:
        out.extend(it)
    return out


def assemble(events: Iterable[RawEvent], finish: float | None = None, **kw: object) -> list[Exchange]:
    """Feed events through an Assembler; the exchanges in order of emission."""
    out: list[Exchange] = []
    asm = Assembler(out.append, **kw)  # type: ignore[arg-type]
    for e in events:
        asm.feed(e)
    if finish is not None:
        asm.finish(finish)
    return out


__all__ = [
    "BASE_TS",
    "EV_CLOSE",
    "EV_OPEN",
    "EV_RECV",
    "EV_REQ_DONE",
    "EV_SEND",
    "EV_UPSTREAM",
    "REQUEST_STREAMS",
    "Req",
    "assemble",
    "at",
    "build_events",
    "chunked",
    "drop",
    "every",
    "interleave",
    "nth",
    "request",
    "response",
]
