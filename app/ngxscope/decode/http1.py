"""HTTP/1.x message framing for byte streams that may have holes.

The capture delivers each direction of a connection as segments: captured bytes plus,
possibly, a count of bytes that crossed the wire but were not captured (payload cap,
sendfile, lost events). `RequestStream` frames requests from the bytes nginx read: it
counts through holes where framing allows (Content-Length bodies) and otherwise marks the
request damaged and resynchronises at the next request line. Responses need no framing
here: nginx tells where each one ends (see assembler), so `parse_response` only reads the
head from the captured prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import ModuleType

from ..capture import compiled

__all__ = [
    "MAX_HEAD",
    "HeadError",
    "ParsedRequest",
    "ParsedResponse",
    "RequestStream",
    "find_head_end",
    "parse_head",
    "parse_head_py",
    "parse_response",
    "parse_response_fields",
    "parse_response_py",
    "request_line_of",
]

_HEAD_END = re.compile(rb"\n\r?\n")

MAX_HEAD = 64 * 1024
"""Longest request/response head accepted (nginx's default large buffers are 4 x 8k)."""

_REQUEST_LINE = re.compile(
    rb"(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK)"
    rb" [^\s]+ HTTP/1\.[01]\r?\n"
)
_HEADER_NAME = re.compile(r"^[^\x00-\x20\x7f:]+$")
"""A header name as nginx takes it: names with characters outside HTTP's token set (or with
underscores) are ignored by nginx (ignore_invalid_headers), not rejected; they are kept here
as sent."""


class HeadError(ValueError):
    """A message head that is not HTTP/1.x."""


def parse_head_py(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """Split a head (without the blank line) into the start line's parts and headers in wire
    order: the pure-Python reference of `parse_head`."""
    text = head.decode("latin-1")
    lines = text.split("\n")
    start = lines[0].rstrip("\r")
    parts = start.split(" ", 2)
    if len(parts) < 2:
        raise HeadError(f"bad start line {start[:80]!r}")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not _HEADER_NAME.match(name):
            raise HeadError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return parts, headers


_fast: ModuleType | None = None
if compiled.wanted():
    try:
        from . import _fasthttp1 as _fast
    except ImportError:  # not built: the reference does the work
        _fast = None


def _parse_head_compiled(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    assert _fast is not None
    out = _fast.parse_head(head)
    if type(out) is str:
        raise HeadError(out)
    return out


parse_head = parse_head_py if _fast is None else _parse_head_compiled
"""Split a head (without the blank line) into the start line's parts and headers in wire
order; HeadError for one that is not HTTP/1.x. Compiled when built, else `parse_head_py`."""


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return None


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line ending a head, or -1. As nginx does, a line ends at
    LF with or without a CR before it, so "\\n\\r\\n" ends a head too (LF header lines then
    a CRLF blank line, as many hand-written clients send)."""
    m = _HEAD_END.search(buf, start)
    return m.end() if m else -1


@dataclass(slots=True)
class ParsedRequest:
    """A request framed from the bytes nginx read."""

    start_ts: float
    """Time of the read that delivered its first byte."""
    start_clock: float = 0.0
    """nginx's cached clock at that read (what its $request_time starts from); 0 if unknown."""
    end_ts: float = 0.0
    """Time of the read that delivered its last byte."""
    method: str = ""
    target: str = ""
    version: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    head_bytes: int = 0
    """Size of request line and headers, blank line included."""
    body: bytearray = field(default_factory=bytearray)
    """Captured body bytes (wire form)."""
    body_size: int = 0
    """Body bytes on the wire so far."""
    complete: bool = False
    """The whole message has been read."""
    truncated: bool = False
    """Some bytes were not captured."""
    error: str | None = None
    """Why the request is damaged, if it is."""
    raw: bytes = b""
    """For a malformed request: the captured bytes that could not be parsed."""
    answered: bool = False
    """nginx finished the request before its body was read completely."""
    body_discarded: bool = False
    """nginx read the body only to throw it away (it is not part of `$request_length`)."""

    @property
    def total_bytes(self) -> int:
        return self.head_bytes + self.body_size


_HEAD, _BODY_CL, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _RESYNC = range(7)
_LINE_START = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}) ([\x21-\x7e]+)(?: (HTTP/\d\.\d)(?:\r?\n|$))?")
# what may follow a target when the kept bytes end inside " HTTP/1.1\r\n"
_CUT_VERSION = re.compile(rb" (?:H(?:T(?:T(?:P(?:/(?:\d(?:\.(?:\d\r?)?)?)?)?)?)?)?)?")


def request_line_of(first: bytes) -> tuple[str, str, str]:
    """(method, target, version) from a request's first bytes as the kernel kept them for a
    shed exchange's summary; ("", "", "") unless they start with a request line. When the
    line was longer than what was kept, the target ends in "…" and the version is ""."""
    m = _LINE_START.match(first)
    if m is None:
        return "", "", ""
    method, target, version = m.group(1), m.group(2), m.group(3)
    if version is None:
        rest = first[m.end():]
        if not rest:
            return method.decode(), target.decode() + "…", ""
        if _CUT_VERSION.fullmatch(rest):
            return method.decode(), target.decode(), ""
        return "", "", ""   # something else follows the target: not a request line
    return method.decode(), target.decode(), version.decode()


_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,19}")
_RESYNC_KEEP = 4096


class RequestStream:
    """Incremental request framing for one connection's inbound bytes.

    Everything fed is appended to one buffer and consumed by a single loop, so results do
    not depend on how the bytes were cut into reads.
    """

    def __init__(self, body_limit: int = 1 << 20) -> None:
        self.body_limit = body_limit
        self.done: list[ParsedRequest] = []
        """Requests fully read, oldest first (the assembler pops them)."""
        self.current: ParsedRequest | None = None
        """The request being read, if any."""
        self._buf = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._first = True
        self._clock = 0.0
        self._ts = 0.0
        self.uncertain = False
        """A hole made us skip bytes to find the next request line: until the stream is
        idle again, which response belongs to which request is not certain."""
        self.joined_midway = False
        """The connection's first bytes were not a request line (capture began mid-connection)."""
        self.allow_midway = False
        """Set for connections first seen right after attaching: a non-request start means
        the capture joined mid-connection, not that the client sent garbage."""

    # -- feeding ----------------------------------------------------------------------
    def feed(self, data: bytes, length: int, ts: float, clock: float = 0.0) -> None:
        """Bytes read by nginx: `data` captured, then `length - len(data)` bytes not captured."""
        self._clock = clock
        self._ts = ts
        if data:
            self._buf += data
            self._run()
        missing = length - len(data)
        if missing > 0:
            self._feed_gap(missing)

    def _run(self) -> None:
        """Consume the buffer as far as the current state allows."""
        buf = self._buf
        while buf:
            state = self._state
            if state == _RESYNC:
                m = _REQUEST_LINE.search(buf)
                if not m:
                    if len(buf) > 2 * _RESYNC_KEEP:
                        del buf[:-_RESYNC_KEEP]
                    return
                del buf[: m.start()]
                self._state = _HEAD
            elif state == _HEAD:
                if not self._parse_head():
                    return
            elif state in (_BODY_CL, _CHUNK_DATA, _CHUNK_CRLF):
                req = self.current
                assert req is not None
                take = min(self._remaining, len(buf))
                self._add_body(req, bytes(buf[:take]))
                del buf[:take]
                self._remaining -= take
                req.end_ts = self._ts
                if self._remaining == 0:
                    if state == _BODY_CL:
                        self._finish(req)
                    elif state == _CHUNK_DATA:
                        self._state = _CHUNK_CRLF
                        self._remaining = 2
                    else:
                        self._state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                if not self._parse_chunk_size():
                    return
            elif not self._parse_trailer():  # _TRAILER
                return

    def _add_body(self, req: ParsedRequest, chunk: bytes) -> None:
        req.body_size += len(chunk)
        room = self.body_limit - len(req.body)
        if room > 0:
            req.body += chunk[:room]
        if len(chunk) > max(room, 0):
            req.truncated = True

    def _parse_head(self) -> bool:
        buf = self._buf
        if self.current is None:
            # blank lines between requests are skipped, as nginx does (a lone CR may be half of one)
            if buf[0] in (10, 13):   # (indexed, not copied: this runs for every request)
                while buf and buf[0] in (10, 13) and not (len(buf) == 1 and buf[0] == 13):
                    del buf[: 2 if buf[:2] == b"\r\n" else 1]
                if not buf or (len(buf) == 1 and buf[0] == 13):
                    return False
            if (_fast is not None and parse_head is _parse_head_compiled and not (self._first and self.allow_midway)
                    and self._whole_head()):
                return True
            self.current = ParsedRequest(start_ts=self._ts, start_clock=self._clock)
            if self.uncertain:
                self.current.error = "pairing uncertain (capture gap)"
                self.current.truncated = True
        req = self.current
        req.end_ts = self._ts
        end = find_head_end(buf)
        if end < 0:
            nl = buf.find(b"\n")
            if (self._first and self.allow_midway and nl > 0
                    and not _REQUEST_LINE.match(bytes(buf[: nl + 1]))):
                self._joined_midway()
                return True
            if len(buf) > MAX_HEAD:
                self._malformed(req, "request head too large", bytes(buf[:4096]))
                buf.clear()
                self._state = _RESYNC
            return False
        if end > MAX_HEAD:
            self._malformed(req, "request head too large", bytes(buf[:4096]))
            del buf[:end]
            self._state = _RESYNC
            return True
        head = bytes(buf[:end])
        try:
            parts, headers = parse_head(head.rstrip(b"\r\n"))
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                first_line = head.split(b"\n", 1)[0][:80]
                raise HeadError(f"bad request line {first_line!r}")
        except HeadError as exc:
            if self._first and self.allow_midway:
                self._joined_midway()
                return True
            self._first = False
            self._malformed(req, str(exc), head[:4096])
            del buf[:end]
            self._state = _RESYNC
            return True
        self._first = False
        del buf[:end]
        req.method, req.target, req.version = parts[0], parts[1], parts[2]
        req.headers = headers
        req.head_bytes = end
        te = cl = None
        for k, v in headers:   # the first of each, as _header finds them (one pass)
            low = k.lower()
            if low == "transfer-encoding":
                if te is None:
                    te = v
            elif low == "content-length" and cl is None:
                cl = v
        if te is not None and "chunked" in te.lower():
            self._state = _CHUNK_SIZE
        elif cl is not None:
            if not _CONTENT_LENGTH_RE.fullmatch(cl.strip()):
                self._malformed(req, f"bad Content-Length {cl[:40]!r}", head[:4096])
                self._state = _RESYNC
                return True
            length = int(cl.strip())
            if length == 0:
                self._finish(req)
            else:
                self._state = _BODY_CL
                self._remaining = length
        else:
            self._finish(req)
        return True

    def _whole_head(self) -> bool:
        """The common case of `_parse_head` in one compiled call: a whole, good request head
        starts the buffer (its framing headers valid). False, nothing consumed, for anything
        else: the rest of `_parse_head` takes it (and says what is wrong)."""
        assert _fast is not None
        got = _fast.request_head(self._buf, MAX_HEAD)
        if got is None:
            return False
        method, target, version, headers, end, te, cl = got
        chunked = te is not None and "chunked" in te.lower()
        length = 0
        if not chunked and cl is not None:
            cl = cl.strip()
            if not _CONTENT_LENGTH_RE.fullmatch(cl):
                return False
            length = int(cl)
        ts = self._ts
        req = self.current = ParsedRequest(ts, self._clock, ts, method, target, version, headers, end)
        if self.uncertain:
            req.error = "pairing uncertain (capture gap)"
            req.truncated = True
        self._first = False
        del self._buf[:end]
        if chunked:
            self._state = _CHUNK_SIZE
        elif length:
            self._state = _BODY_CL
            self._remaining = length
        else:
            self._finish(req)
        return True

    def _parse_chunk_size(self) -> bool:
        req = self.current
        assert req is not None
        nl = self._buf.find(b"\n")
        if nl < 0:
            if len(self._buf) > 1024:
                self._damaged(req, "bad chunk size line")
                self._buf.clear()
            return False
        line = bytes(self._buf[: nl + 1])
        del self._buf[: nl + 1]
        self._add_body(req, line)
        req.end_ts = self._ts
        size_field = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE_RE.fullmatch(size_field):
            self._damaged(req, f"bad chunk size {line[:20]!r}")
            return True
        size = int(size_field, 16)
        if size == 0:
            self._state = _TRAILER
        else:
            self._state = _CHUNK_DATA
            self._remaining = size
        return True

    def _parse_trailer(self) -> bool:
        req = self.current
        assert req is not None
        nl = self._buf.find(b"\n")
        if nl < 0:
            return False
        line = bytes(self._buf[: nl + 1])
        del self._buf[: nl + 1]
        self._add_body(req, line)
        req.end_ts = self._ts
        if line.strip() == b"":
            self._finish(req)
        return True

    def _feed_gap(self, missing: int) -> None:
        req = self.current
        if req is not None:
            req.truncated = True
            req.end_ts = self._ts
        if self._state == _BODY_CL and req is not None and not self._buf:
            # a hole inside a Content-Length body is counted through exactly
            take = min(self._remaining, missing)
            req.body_size += take
            self._remaining -= take
            missing -= take
            if self._remaining == 0:
                self._finish(req)
                req = None
            if missing <= 0:
                return
        if req is not None and self._state != _RESYNC:
            self._damaged(req, f"{missing} bytes of the request were not captured")
        # Whatever else the hole held (the rest of a request, whole requests), the next
        # request line is found by searching, and pairing is in doubt until nginx has
        # finished everything read so far (see settle()).
        self.uncertain = True
        self._buf.clear()
        self._state = _RESYNC

    # -- outcomes -----------------------------------------------------------------------
    def _finish(self, req: ParsedRequest) -> None:
        req.complete = True
        if not req.answered:
            self.done.append(req)
        self.current = None
        self._state = _HEAD

    def _damaged(self, req: ParsedRequest, why: str) -> None:
        req.error = req.error or why
        req.complete = True
        if not req.answered:
            self.done.append(req)
        self.current = None
        self._state = _RESYNC

    def _malformed(self, req: ParsedRequest, why: str, raw: bytes) -> None:
        req.error = f"malformed request: {why}"
        req.raw = raw
        req.head_bytes = len(raw)
        req.complete = True
        self.done.append(req)
        self.current = None

    def _joined_midway(self) -> None:
        self.joined_midway = True
        self._first = False
        self.current = None
        self._state = _RESYNC
        # drop the partial first line so the search starts at the next one
        nl = self._buf.find(b"\n")
        if nl >= 0:
            del self._buf[: nl + 1]

    def take(self) -> ParsedRequest | None:
        """The oldest request read so far (complete or the one in progress), for pairing."""
        if self.done:
            return self.done.pop(0)
        req = self.current
        if req is not None and req.method and not req.answered:
            # nginx answered before reading the whole body (413, or a body it discards):
            # the rest of the body still frames here but belongs to no later request.
            req.answered = True
            return req
        return None

    def idle(self) -> bool:
        """Nothing read is waiting: the next byte starts a new request."""
        return not self.done and self.current is None and not self._buf and self._state in (_HEAD, _RESYNC)

    def settle(self) -> None:
        """Called when nginx finished a request: an idle stream is certain again."""
        if self.idle():
            self.uncertain = False

    def pending_bytes(self) -> int:
        """Bytes buffered but not yet part of any request (for an unparseable stream)."""
        return len(self._buf)

    def pending_raw(self) -> bytes:
        return bytes(self._buf)


@dataclass(slots=True)
class ParsedResponse:
    """The head of the final response found at the start of a response's bytes."""

    status: int | None = None
    reason: str = ""
    version: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    head_bytes: int = 0
    """Bytes of all heads (interim 1xx included) before the body."""
    body_offset: int = 0
    """Offset of the body within the captured prefix."""
    error: str | None = None


def parse_response(prefix: bytes) -> ParsedResponse:
    """Read the final response head from the captured start of a response (1xx skipped):
    compiled when built, else `parse_response_py`."""
    if _fast is None or parse_head is not _parse_head_compiled:
        return parse_response_py(prefix)
    status, reason, version, headers, head_bytes, error = _fast.parse_response(prefix)
    return ParsedResponse(status, reason, version, headers, head_bytes, head_bytes, error)


ResponseFields = tuple[int | None, str, str, list[tuple[str, str]], int, str | None]
"""(status, reason, version, headers, head_bytes, error) of a `ParsedResponse` (its
body_offset is head_bytes)."""


def parse_response_fields(prefix: bytes) -> ResponseFields:
    """`parse_response` as a tuple, without the object (every exchange's response passes
    here)."""
    if _fast is None or parse_head is not _parse_head_compiled:
        r = parse_response_py(prefix)
        return r.status, r.reason, r.version, r.headers, r.head_bytes, r.error
    out: ResponseFields = _fast.parse_response(prefix)
    return out


def parse_response_py(prefix: bytes) -> ParsedResponse:
    """Read the final response head from the captured start of a response (1xx skipped):
    the pure-Python reference of `parse_response`."""
    out = ParsedResponse()
    pos = 0
    while True:
        end = find_head_end(prefix, pos)
        if end < 0:
            out.error = "response head not captured" if prefix else "no response bytes captured"
            return out
        try:
            parts, headers = parse_head(prefix[pos:end].rstrip(b"\r\n"))
            if not parts[0].startswith("HTTP/"):
                raise HeadError(f"bad status line {prefix[pos:pos + 40]!r}")
            status = int(parts[1])
        except (HeadError, ValueError) as exc:
            out.error = f"malformed response: {exc}"
            return out
        if 100 <= status < 200 and status != 101:
            pos = end
            continue
        out.status = status
        out.version = parts[0]
        out.reason = parts[2] if len(parts) > 2 else ""
        out.headers = headers
        out.head_bytes = end
        out.body_offset = end
        return out
