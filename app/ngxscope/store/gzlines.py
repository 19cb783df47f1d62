"""Lines of a gzip file, read piece by piece so that damage loses as little as possible."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import IO

__all__ = ["GzipLines"]

_READ_CHUNK = 64 * 1024
_ZLIB_PIECE = 1024  # compressed bytes per zlib call: damage loses at most one piece's output


class GzipLines:
    """Decompress a gzip file piece by piece and split it into lines.

    zlib is fed 1 KiB pieces and the trailer (CRC, length) apart, so damage loses at
    most the records of one piece before it; `error` tells how the stream ended.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.error: Exception | None = None
        """EOFError (truncated) or zlib.error (damaged: bad data, CRC, trailing garbage)."""

    def _pieces(self) -> Iterator[bytes]:
        """The file in pieces for zlib; the last 8 bytes (the gzip trailer) on their own."""
        carry = b""
        while True:
            buf = self._raw.read(_READ_CHUNK)
            if not buf:
                if carry:
                    yield carry
                return
            data = carry + buf
            carry = data[-8:]
            for i in range(0, len(data) - 8, _ZLIB_PIECE):
                yield data[i : min(i + _ZLIB_PIECE, len(data) - 8)]

    def _chunks(self) -> Iterator[bytes]:
        d = zlib.decompressobj(wbits=31)  # gzip wrapper: zlib checks CRC and length
        for piece in self._pieces():
            try:
                while piece:
                    if d.eof:  # another gzip member follows, or zero padding
                        if not piece.strip(b"\0"):
                            break
                        d = zlib.decompressobj(wbits=31)
                    out = d.decompress(piece)
                    piece = d.unused_data if d.eof else b""
                    if out:
                        yield out
            except zlib.error as exc:
                self.error = exc
                return
        if not d.eof:
            self.error = EOFError("compressed data ended before the end-of-stream marker")

    def __iter__(self) -> Iterator[tuple[bytes, bool]]:
        """Yield (line without newline, ended with a newline)."""
        pending = bytearray()
        for chunk in self._chunks():
            start = 0
            while (nl := chunk.find(b"\n", start)) >= 0:
                if pending:
                    pending += chunk[start:nl]
                    yield bytes(pending), True
                    pending.clear()
                else:
                    yield chunk[start:nl], True
                start = nl + 1
            pending += chunk[start:]
        if pending:
            yield bytes(pending), False
