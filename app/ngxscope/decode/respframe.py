"""HTTP/1 response framing from the bytes nginx wrote, for captures without completion markers.

The nginx-uprobe capture cuts responses where nginx frees each request (EV_REQ_DONE). The
libssl/syscall fallback has no such marker, so responses are delimited the way a client
would: status line and headers, then Content-Length, chunked framing, or the connection's
close; HEAD requests, 1xx, 204 and 304 have no body. Interim 1xx heads belong to the
response that follows them. Bytes that were not captured (payload cap, sendfile) are fine
inside bodies and chunk data; where framing itself was not captured the framer waits for a
write that starts with a status line and reports that boundary as uncertain.
"""

from __future__ import annotations

from collections import deque

from .http1 import HeadError, _header, find_head_end, parse_head

__all__ = ["ResponseFramer"]

HEAD, CL, CHUNK_SIZE, CHUNK_DATA, TRAILER, CLOSE, LOST = range(7)
_SCAN_LIMIT = 65536


class ResponseFramer:
    """Feed a connection's outbound bytes; `next_end(method)` yields where responses end."""

    def __init__(self, start: int = 0) -> None:
        self.pieces: deque[tuple[bytes, int]] = deque()
        """(captured bytes, bytes on the wire) not consumed yet; data may be a prefix."""
        self.cut = 0
        """Bytes of pieces[0] already consumed."""
        self.pos = start
        """Absolute stream offset of the cursor."""
        self.fed = start
        """Absolute stream offset just past the last byte fed."""
        self.state = HEAD
        self.remaining = 0
        self.uncertain = False
        """The last end returned was found by resynchronising after unframeable bytes."""
        self.lost = 0
        """How many times framing was lost."""

    @property
    def close_delimited(self) -> bool:
        return self.state == CLOSE

    def feed(self, data: bytes, length: int) -> None:
        if length > 0:
            self.pieces.append((data[:length], length))
            self.fed += length

    # -- cursor ---------------------------------------------------------------------------
    def _skip(self, n: int) -> int:
        done = 0
        while n > 0 and self.pieces:
            _data, length = self.pieces[0]
            take = min(n, length - self.cut)
            self.cut += take
            done += take
            n -= take
            if self.cut == length:
                self.pieces.popleft()
                self.cut = 0
        self.pos += done
        return done

    def _contig(self) -> tuple[bytes, bool]:
        """Captured bytes from the cursor up to the first hole; True when a hole ends them."""
        out = bytearray()
        first = True
        for data, length in self.pieces:
            start = self.cut if first else 0
            first = False
            if start < len(data):
                out += data[start:]
            if len(data) < length:
                return bytes(out), True
            if len(out) >= _SCAN_LIMIT:
                break
        return bytes(out), False

    def _lose(self) -> None:
        self.lost += 1
        self.state = LOST

    # -- framing --------------------------------------------------------------------------
    def next_end(self, method: str) -> int | None:
        """The stream offset where the next response ends, or None until more bytes come."""
        while True:
            st = self.state
            if st == LOST:
                while self.pieces:
                    if self.cut == 0 and self.pieces[0][0].startswith(b"HTTP/1."):
                        self.state = HEAD
                        self.uncertain = True
                        return self.pos
                    self._skip(self.pieces[0][1] - self.cut)
                return None
            if st == CLOSE:
                self._skip(self.fed - self.pos)
                return None
            if not self.pieces:
                return None
            if st == HEAD:
                buf, hole = self._contig()
                end = find_head_end(buf)
                if end < 0:
                    if hole or len(buf) >= _SCAN_LIMIT:
                        self._lose()
                        continue
                    return None
                try:
                    parts, headers = parse_head(buf[:end].rstrip(b"\r\n"))
                    if not parts[0].startswith("HTTP/"):
                        raise HeadError("not a status line")
                    status = int(parts[1])
                except (HeadError, ValueError):
                    self._lose()
                    continue
                self._skip(end)
                if 100 <= status < 200 and status != 101:
                    continue  # interim: part of the response that follows
                if method == "HEAD" or status in (101, 204, 304):
                    return self._end()
                te = (_header(headers, "Transfer-Encoding") or "").lower()
                cl = _header(headers, "Content-Length")
                if "chunked" in te:
                    self.state = CHUNK_SIZE
                elif cl is not None and cl.strip().isdigit():
                    self.remaining = int(cl.strip())
                    self.state = CL
                    if self.remaining == 0:
                        return self._end()
                else:
                    self.state = CLOSE
            elif st in (CL, CHUNK_DATA):
                self.remaining -= self._skip(self.remaining)
                if self.remaining:
                    return None
                if st == CL:
                    return self._end()
                self.state = CHUNK_SIZE
            elif st in (CHUNK_SIZE, TRAILER):
                buf, hole = self._contig()
                nl = buf.find(b"\n")
                if nl < 0:
                    if hole or len(buf) >= _SCAN_LIMIT:
                        self._lose()
                        continue
                    return None
                line = buf[:nl].rstrip(b"\r")
                self._skip(nl + 1)
                if st == TRAILER:
                    if not line:
                        return self._end()
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._lose()
                    continue
                if size == 0:
                    self.state = TRAILER
                else:
                    self.remaining = size + 2
                    self.state = CHUNK_DATA

    def _end(self) -> int:
        self.state = HEAD
        self.uncertain = False
        return self.pos
