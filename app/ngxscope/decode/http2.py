"""HTTP/2 over the plaintext of a TLS connection: frames, HPACK, one exchange per stream.

The capture gives both directions of the real connection as byte streams (what
``ngx_ssl_recv`` returned and what ``ngx_ssl_write`` was given). `H2Connection` parses
frames out of them (its own frame parser; header blocks are decoded with ``hpack``, one
decoder per direction, so the dynamic tables follow the connection) and keeps one
`H2Stream` per stream id. nginx tells when each stream is finished and logged: its
``ngx_http_free_request`` fires once per stream, with the stream's own ``sent`` counter
(the capture's EV_REQ_DONE with EVF_H2STREAM), so exchanges are cut by nginx itself and
the response size is exactly ``$bytes_sent``.

What nginx counts for a stream, and what this module reports:

- ``$request_length``: the header block bytes of the request's HEADERS frame (padding and
  priority fields excluded; nginx does not add CONTINUATION frames) plus the DATA payload
  bytes it read into the request body (padding excluded) -- only when it reads the body,
  i.e. for proxied requests; a body it discards is not counted (as for HTTP/1).
  `H2Stream.request_bytes`.
- ``$bytes_sent``: the stream's fake connection's ``sent``: 9 + payload length of every
  HEADERS/CONTINUATION/DATA frame nginx wrote for the stream. Taken from the kernel event;
  `H2Stream.frame_bytes` computes the same from the frames (used to pair completions).

A connection first seen part-way (no connection preface) cannot be decoded: frame
boundaries and, above all, the HPACK dynamic tables are unknown, so headers would be
wrong. Its streams are reported from nginx's completions only (sizes, times, worker),
marked "joined mid-connection".
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

import hpack
import hpack.exceptions

__all__ = ["PREFACE", "H2Connection", "H2Stream", "grpc_summary"]

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

_FRAME = struct.Struct(">HBBBI")  # length hi16, length lo8, type, flags, stream id
_MAX_KEEP = 256 * 1024
_Frame = tuple[int, int, int, int, "bytes | None", float, float, float]
"""type, flags, stream id, length, payload (None: not all captured), first ts, first clock, last ts"""


@dataclass(slots=True)
class H2Stream:
    """One HTTP/2 stream: a request and its response."""

    sid: int
    start_ts: float
    """Time of the read that delivered the request's HEADERS frame."""
    start_clock: float = 0.0
    """nginx's cached clock then (where $request_time starts: the stream is created there)."""
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    """Pseudo-headers first (``:method``, ``:path``...), then the others, in wire order."""
    request_trailers: list[tuple[str, str]] = field(default_factory=list)
    data_bytes: int = 0
    """DATA payload bytes read for the stream (padding excluded)."""
    request_body: bytearray = field(default_factory=bytearray)
    request_body_size: int = 0
    request_ended: bool = False
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_trailers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytearray = field(default_factory=bytearray)
    response_body_size: int = 0
    frame_bytes: int = 0
    """Bytes of HEADERS/CONTINUATION/DATA frames nginx wrote for the stream (= $bytes_sent)."""
    end_ts: float = 0.0
    """Time of the write that carried the stream's last frame (END_STREAM or RST_STREAM)."""
    ended: bool = False
    """nginx finished its side: END_STREAM written, or the stream was reset."""
    reset: str | None = None
    """Who reset the stream, and the error code, when it was."""
    truncated: bool = False
    error: str | None = None
    concurrent: bool = False
    """Another stream was in flight at the same time (multiplexed)."""
    header_bytes: int = 0
    """The request's header block bytes (the part of $request_length nginx counts first)."""
    proxied: bool = False
    """nginx passed the request to an upstream, so it read the body (and counted it)."""
    last_in: int = 0
    """Sequence number of the last inbound frame of this stream."""

    @property
    def request_bytes(self) -> int:
        """What nginx counts in $request_length (see the module docstring)."""
        return self.header_bytes + (self.data_bytes if self.proxied else 0)

    def header(self, name: str, trailers: bool = False) -> str | None:
        for k, v in self.response_trailers if trailers else self.request_headers:
            if k == name:
                return v
        return None

    @property
    def status(self) -> int | None:
        for k, v in self.response_headers:
            if k == ":status":
                try:
                    return int(v)
                except ValueError:
                    return None
        return None


def grpc_summary(path: str, headers: list[tuple[str, str]], trailers: list[tuple[str, str]]) -> str:
    """"gRPC pkg.Service/Method grpc-status N" for a gRPC stream, else ""."""
    ctype = next((v for k, v in headers if k == "content-type"), "")
    if not ctype.startswith("application/grpc"):
        return ""
    service, _, method = path.lstrip("/").partition("/")
    status = next((v for k, v in trailers if k == "grpc-status"), None)
    if status is None:  # trailers-only response: grpc-status in the headers
        status = next((v for k, v in headers if k == "grpc-status"), None)
    text = f"gRPC {service}/{method}"
    if status is not None:
        text += f" grpc-status {status}"
        message = next((v for k, v in trailers + headers if k == "grpc-message"), "")
        if message:
            text += f" ({message})"
    return text


class _FrameReader:
    """Frames out of one direction's byte stream, which may have holes (uncaptured bytes)."""

    def __init__(self, skip: int = 0) -> None:
        self._buf = bytearray()
        self._skip_preface = skip
        self._need = 9
        self._hdr: tuple[int, int, int, int] | None = None  # length, type, flags, sid
        self._payload = bytearray()
        self._payload_hole = False
        self._left = 0
        self._first_ts = 0.0
        self._first_clock = 0.0
        self.broken = False
        """A hole hit a frame header: the rest of this direction cannot be framed."""

    def feed(self, data: bytes, length: int, ts: float, clock: float,
             out: list[_Frame]) -> None:
        """Append `data` then a hole of `length - len(data)`; complete frames go to `out`
        as (type, flags, sid, length, payload or None when it has a hole, first ts, first
        clock, last ts)."""
        self._take(memoryview(data), ts, clock, out)
        hole = length - len(data)
        if hole > 0:
            self._hole(hole, ts, clock, out)

    def _take(self, view: memoryview, ts: float, clock: float, out: list[_Frame]) -> None:
        pos = 0
        n = len(view)
        while pos < n and not self.broken:
            if self._skip_preface:
                k = min(self._skip_preface, n - pos)
                self._skip_preface -= k
                pos += k
                continue
            if self._hdr is None:
                k = min(9 - len(self._buf), n - pos)
                if not self._buf:
                    self._first_ts, self._first_clock = ts, clock
                self._buf += view[pos : pos + k]
                pos += k
                if len(self._buf) == 9:
                    hi, lo, ftype, flags, sid = _FRAME.unpack(bytes(self._buf))
                    self._buf.clear()
                    self._hdr = ((hi << 8) | lo, ftype, flags, sid & 0x7FFFFFFF)
                    self._left = self._hdr[0]
                    self._payload = bytearray()
                    self._payload_hole = False
                    if self._left == 0:
                        self._emit(ts, out)
                continue
            k = min(self._left, n - pos)
            if len(self._payload) < _MAX_KEEP:
                self._payload += view[pos : pos + min(k, _MAX_KEEP - len(self._payload))]
            else:
                self._payload_hole = True
            pos += k
            self._left -= k
            if self._left == 0:
                self._emit(ts, out)

    def _hole(self, n: int, ts: float, clock: float, out: list[_Frame]) -> None:
        while n > 0 and not self.broken:
            if self._skip_preface:
                k = min(self._skip_preface, n)
                self._skip_preface -= k
                n -= k
                continue
            if self._hdr is None:
                self.broken = True
                return
            k = min(self._left, n)
            self._payload_hole = True
            self._left -= k
            n -= k
            if self._left == 0:
                self._emit(ts, out)

    def _emit(self, ts: float, out: list[_Frame]) -> None:
        assert self._hdr is not None
        length, ftype, flags, sid = self._hdr
        payload = None if self._payload_hole else bytes(self._payload)
        out.append((ftype, flags, sid, length, payload, self._first_ts, self._first_clock, ts))
        self._hdr = None


def _strip(ftype: int, flags: int, payload: bytes) -> tuple[bytes, int]:
    """(header block fragment or data, padding+priority bytes) of a HEADERS/DATA payload."""
    off = 0
    pad = 0
    if flags & PADDED and payload:
        pad = payload[0]
        off = 1
    if ftype == HEADERS and flags & PRIORITY_FLAG:
        off += 5
    end = max(off, len(payload) - pad)
    return payload[off:end], off + pad


class H2Connection:
    """The decoder of one HTTP/2 connection (server side: nginx reads requests)."""

    def __init__(self, body_limit: int = 256 * 1024, from_start: bool = True) -> None:
        self.body_limit = body_limit
        self.joined = not from_start
        """First seen part-way: nothing can be decoded (see the module docstring)."""
        self._in = _FrameReader(skip=len(PREFACE) if from_start else 0)
        self._out = _FrameReader()
        self._in_dec = hpack.Decoder()
        self._out_dec = hpack.Decoder()
        for dec in (self._in_dec, self._out_dec):
            dec.max_allowed_table_size = 1 << 20
            dec.max_header_list_size = 1 << 24
        self.streams: dict[int, H2Stream] = {}
        self._in_block: tuple[int, bytearray, bool, float, float] | None = None
        self._out_block: tuple[int, bytearray, bool] | None = None
        self._in_seq = 0
        self.hpack_broken: str | None = None
        """Why header blocks can no longer be decoded (a hole in a header block)."""

    # -- feeding -----------------------------------------------------------------------------
    def feed_in(self, data: bytes, length: int, ts: float, clock: float) -> None:
        """Bytes nginx read (client → nginx)."""
        if self.joined:
            return
        frames: list[_Frame] = []
        self._in.feed(data, length, ts, clock, frames)
        for fr in frames:
            self._inbound(*fr)
        if self._in.broken and not self.hpack_broken:
            self.hpack_broken = "bytes nginx read were not captured (frame boundary lost)"

    def feed_out(self, data: bytes, length: int, ts: float) -> None:
        """Bytes nginx wrote (nginx → client)."""
        if self.joined:
            return
        frames: list[_Frame] = []
        self._out.feed(data, length, ts, 0.0, frames)
        for fr in frames:
            self._outbound(*fr)
        if self._out.broken and not self.hpack_broken:
            self.hpack_broken = "bytes nginx wrote were not captured (frame boundary lost)"

    def _decode(self, dec: hpack.Decoder, block: bytes | None) -> list[tuple[str, str]] | None:
        if self.hpack_broken:
            return None
        if block is None:
            self.hpack_broken = "a header block was not captured completely"
            return None
        try:
            return [(str(k), str(v)) for k, v in dec.decode(block, raw=False)]
        except (hpack.exceptions.HPACKError, UnicodeDecodeError, ValueError, IndexError) as exc:
            self.hpack_broken = f"HPACK decoding failed: {exc}"
            return None

    def _inbound(self, ftype: int, flags: int, sid: int, length: int, payload: bytes | None,
                 first_ts: float, first_clock: float, last_ts: float) -> None:
        self._in_seq += 1
        if sid in self.streams:
            self.streams[sid].last_in = self._in_seq
        if ftype == HEADERS:
            frag, extra = _strip(ftype, flags, payload) if payload is not None else (b"", 0)
            st = self.streams.get(sid)
            if st is None:
                st = H2Stream(sid=sid, start_ts=first_ts, start_clock=first_clock)
                if self.streams:
                    st.concurrent = True
                    for other in self.streams.values():
                        other.concurrent = True
                self.streams[sid] = st
                st.last_in = self._in_seq
                st.header_bytes = length - extra if payload is not None else length
            block = bytearray(frag) if payload is not None else None
            if flags & END_STREAM:
                st.request_ended = True
            self._in_block = (sid, block, flags & END_STREAM != 0, first_ts, first_clock)  # type: ignore[assignment]
            if flags & END_HEADERS:
                self._end_in_block()
        elif ftype == CONTINUATION:
            if self._in_block is not None and self._in_block[0] == sid:
                blk = self._in_block[1]
                if blk is not None and payload is not None:
                    blk += payload
                elif payload is None:
                    self._in_block = (sid, None, *self._in_block[2:])  # type: ignore[assignment]
                if flags & END_HEADERS:
                    self._end_in_block()
        elif ftype == DATA:
            st = self.streams.get(sid)
            if st is None:
                return
            if payload is not None:
                data, extra = _strip(ftype, flags, payload)
            else:
                data, extra = b"", 0
                st.truncated = True
            size = length - extra
            st.request_body_size += size
            st.data_bytes += size
            room = self.body_limit - len(st.request_body)
            if room > 0:
                st.request_body += data[:room]
            if flags & END_STREAM:
                st.request_ended = True
        elif ftype == RST_STREAM:
            st = self.streams.get(sid)
            if st is not None and not st.ended:
                code = struct.unpack(">I", payload[:4])[0] if payload and len(payload) >= 4 else -1
                st.reset = f"reset by the client (error code {code})"
                st.ended = True
                st.end_ts = st.end_ts or last_ts

    def _end_in_block(self) -> None:
        assert self._in_block is not None
        sid, block, _end, _ts, _clock = self._in_block
        self._in_block = None
        st = self.streams.get(sid)
        headers = self._decode(self._in_dec, bytes(block) if block is not None else None)
        if st is None:
            return
        if headers is None:
            st.error = f"headers unknown: {self.hpack_broken}"
            return
        if not st.request_headers:
            st.request_headers = headers
        else:
            st.request_trailers = headers

    def _outbound(self, ftype: int, flags: int, sid: int, length: int, payload: bytes | None,
                  first_ts: float, _first_clock: float, last_ts: float) -> None:
        st = self.streams.get(sid) if sid else None
        if ftype in (HEADERS, CONTINUATION, DATA) and st is not None:
            st.frame_bytes += 9 + length
            st.end_ts = last_ts
        if ftype == HEADERS:
            frag = _strip(ftype, flags, payload)[0] if payload is not None else None
            self._out_block = (sid, bytearray(frag) if frag is not None else None,  # type: ignore[assignment]
                               flags & END_STREAM != 0)
            if flags & END_HEADERS:
                self._end_out_block()
            if flags & END_STREAM and st is not None:
                st.ended = True
        elif ftype == CONTINUATION:
            if self._out_block is not None and self._out_block[0] == sid:
                blk = self._out_block[1]
                if blk is not None and payload is not None:
                    blk += payload
                elif payload is None:
                    self._out_block = (sid, None, self._out_block[2])  # type: ignore[assignment]
                if flags & END_HEADERS:
                    self._end_out_block()
        elif ftype == DATA:
            if st is None:
                return
            if payload is not None:
                data, extra = _strip(ftype, flags, payload)
            else:
                data, extra = b"", 0
                st.truncated = True
            st.response_body_size += length - extra
            room = self.body_limit - len(st.response_body)
            if room > 0:
                st.response_body += data[:room]
            if flags & END_STREAM:
                st.ended = True
        elif ftype == RST_STREAM and st is not None and not st.ended:
            code = struct.unpack(">I", payload[:4])[0] if payload and len(payload) >= 4 else -1
            st.reset = f"reset by nginx (error code {code})"
            st.ended = True
            st.end_ts = last_ts

    def _end_out_block(self) -> None:
        assert self._out_block is not None
        sid, block, _end = self._out_block
        self._out_block = None
        headers = self._decode(self._out_dec, bytes(block) if block is not None else None)
        st = self.streams.get(sid)
        if st is None:
            return
        if headers is None:
            st.error = f"headers unknown: {self.hpack_broken}"
            return
        # the first block, or a final response after a 1xx (which carries :status too)
        if not st.response_headers or any(k == ":status" for k, _ in headers):
            st.response_headers = headers
        else:
            st.response_trailers = headers

    def mark_proxied(self) -> None:
        """nginx handed a stream's request to an upstream (ngx_http_upstream_init): it does
        that right after reading what it needs (the header block, or the whole body when it
        buffers it), so it is the stream the latest frames nginx read belong to."""
        cands = [s for s in self.streams.values() if not s.proxied]
        if cands:
            max(cands, key=lambda s: s.last_in).proxied = True

    # -- completions -------------------------------------------------------------------------
    def take(self, sent: int) -> tuple[H2Stream | None, bool]:
        """The stream nginx just finished (its $bytes_sent is `sent`), removed; and whether the
        pairing is certain. Streams nginx finished are tried in stream order; a byte count
        that matches decides."""
        done = [s for s in self.streams.values() if s.ended]
        for st in done:
            if st.frame_bytes == sent:
                del self.streams[st.sid]
                return st, True
        if done:
            st = done[0]
            del self.streams[st.sid]
            return st, False
        if self.streams:
            st = next(iter(self.streams.values()))
            del self.streams[st.sid]
            return st, False
        return None, False

    def leftovers(self) -> list[H2Stream]:
        """Streams never completed by nginx (the connection or capture ended first)."""
        out = list(self.streams.values())
        self.streams.clear()
        return out
