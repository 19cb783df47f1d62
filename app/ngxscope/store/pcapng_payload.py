"""HTTP payload for the pcapng export: heads rebuilt from the parsed exchange, bodies with
their true length (uncaptured bytes as counted zeros, chunked framing completed), cut into
TCP segments of at most MSS bytes. No framing here: store.export_pcapng writes the packets.
"""

from __future__ import annotations

from collections.abc import Iterator

from ngxscope.model import Exchange
from ngxscope.store.export_har import header

__all__ = [
    "CONTINUE",
    "MSS",
    "Piece",
    "body_pieces",
    "chunked_fill",
    "head_bytes",
    "is_chunked",
    "piece_length",
    "request_body_len",
    "response_body_len",
    "segments",
]

MSS = 1460
"""Largest TCP payload per packet."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Piece = bytes | int
"""Payload: captured bytes, or a count of zero bytes standing for uncaptured ones."""


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


def head_bytes(first: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [first] + [f"{k}: {v}" for k, v in headers]
    return _enc("\r\n".join(lines) + "\r\n\r\n")


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    value = header(headers, "Content-Length")
    if value is not None and value.strip().isdigit():
        return int(value.strip())
    return None


def is_chunked(headers: list[tuple[str, str]]) -> bool:
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


def body_pieces(captured: bytes, length: int, chunked: bool) -> list[Piece]:
    if len(captured) >= length:
        return [captured[:length]]
    if chunked:
        pieces = chunked_fill(captured, length)
        if pieces is not None:
            return pieces
    return [captured, length - len(captured)]


def request_body_len(ex: Exchange) -> int:
    if is_chunked(ex.request_headers):
        return ex.request_body_size
    cl = _content_length(ex.request_headers)
    return cl if cl is not None else ex.request_body_size


def response_body_len(ex: Exchange, status: int) -> int:
    if ex.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    cl = None if is_chunked(ex.response_headers) else _content_length(ex.response_headers)
    return cl if cl is not None else ex.response_body_size


def piece_length(pieces: list[Piece]) -> int:
    return sum(p if isinstance(p, int) else len(p) for p in pieces)


def segments(pieces: list[Piece]) -> Iterator[tuple[bytes, int]]:
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
