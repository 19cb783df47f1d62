"""Body helpers shared by the exports and the window (no Qt)."""

from __future__ import annotations

__all__ = ["dechunk"]


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
