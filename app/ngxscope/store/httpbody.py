"""Body helpers shared by the exports and the window (no Qt)."""

from __future__ import annotations

import zlib

__all__ = ["dechunk", "inflate"]


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """Remove chunked framing; returns (payload, complete). Stops cleanly at a cut."""
    out = bytearray()
    pos, n = 0, len(data)
    while pos < n:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        try:
            size = int(data[pos:eol].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return bytes(out), False
        pos = eol + 2
        if size == 0:
            return bytes(out), True
        chunk = data[pos : pos + size]
        out += chunk
        if len(chunk) < size:
            return bytes(out), False
        pos += size + 2
    return bytes(out), False


def inflate(data: bytes, encoding: str, limit: int) -> tuple[bytes | None, str | None]:
    """Content-Encoding gzip / deflate decoded, at most `limit` bytes: (payload, problem).

    The payload is None when nothing could be decoded (another encoding, a broken stream);
    a cut stream gives what it held with a problem saying so. `deflate` is tried zlib-wrapped
    first, then raw (servers send both)."""
    enc = encoding.strip().lower()
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        return None, f"Content-Encoding {encoding} not decoded"
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(data, limit)
        if not d.eof:
            return out, "compressed stream incomplete (truncated capture)"
        return out, None
    except zlib.error as exc:
        if enc == "deflate":
            try:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, limit), None
            except zlib.error:
                pass
        return None, f"cannot decompress: {exc}"
