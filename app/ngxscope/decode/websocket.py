"""WebSocket (RFC 6455) frame counting for a connection nginx upgraded (status 101).

After the 101 response nginx only relays bytes; its access log line for the request comes
when the tunnel closes, with $bytes_sent counting the 101 head and every relayed byte.
ngxscope hands the upgrade's exchange out then, with the same count, and summarises the
tunnel per direction: frames, messages (a data frame and its continuations up to FIN),
control frames, payload bytes and wire bytes (only wire bytes for other upgrade
protocols). Bytes that were not captured keep counting wire bytes; a hole that
hides a frame header stops the frame count for that direction (flagged as uncertain).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WsDirection", "WsTunnel"]


@dataclass(slots=True)
class WsDirection:
    """One direction of a tunnel."""

    wire_bytes: int = 0
    """Wire bytes (frame headers included)."""
    frames: int = 0
    messages: int = 0
    """Complete data messages (text/binary, fragmented ones counted once)."""
    control: int = 0
    """Ping, pong and close frames."""
    payload: int = 0
    """Payload bytes of data frames."""
    lost_sync: bool = False
    """A frame header was not captured: frame and message counts stop there."""
    closed: bool = False
    """A close frame was seen."""
    raw: bool = False
    """Not WebSocket (another upgrade protocol): only bytes are counted."""
    _head: bytes = b""
    _left: int = 0

    def feed(self, data: bytes, length: int) -> None:
        """`data` captured of `length` bytes relayed (the rest is a hole)."""
        self.wire_bytes += length
        if self.lost_sync or self.raw:
            return
        pos, n = 0, len(data)
        while pos < n:
            if self._left:
                k = min(self._left, n - pos)
                self._left -= k
                pos += k
                continue
            need = self._need()
            before = len(self._head)
            self._head += data[pos : pos + need - before]
            pos += len(self._head) - before
            if len(self._head) < need:
                break
            if self._need() > len(self._head):
                continue  # the length byte asked for an extended length / mask
            self._frame()
        hole = length - n
        if hole > 0:
            if not self._head and self._left >= hole:
                self._left -= hole
            else:
                self.lost_sync = True

    def _need(self) -> int:
        h = self._head
        if len(h) < 2:
            return 2
        n = h[1] & 0x7F
        return 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if h[1] & 0x80 else 0)

    def _frame(self) -> None:
        h = self._head
        n = h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(h[2:4], "big")
        elif n == 127:
            n = int.from_bytes(h[2:10], "big")
        fin, opcode = bool(h[0] & 0x80), h[0] & 0x0F
        self.frames += 1
        if opcode >= 8:
            self.control += 1
            self.closed = self.closed or opcode == 8
        else:
            self.payload += n
            if fin:
                self.messages += 1
        self._head = b""
        self._left = n


@dataclass(slots=True)
class WsTunnel:
    """An upgraded connection: the exchange that upgraded it and both directions."""

    exchange_id: int
    request: str
    """"GET /ws/echo" of the upgrade request."""
    start: float
    inbound: WsDirection
    """client → nginx"""
    outbound: WsDirection
    """nginx → client"""
    protocol: str = "websocket"
    """The protocol the 101 response switched to (its Upgrade header, lower case)."""

    def summary(self, end: float, how: str) -> str:
        def side(d: WsDirection) -> str:
            if d.raw:
                return f"{d.wire_bytes} bytes"
            counts = "frame counts uncertain (bytes not captured)" if d.lost_sync else (
                f"{d.messages} messages, {d.payload} payload bytes, {d.frames} frames ({d.control} control)")
            return f"{counts}, {d.wire_bytes} bytes"
        what = "WebSocket" if self.protocol == "websocket" else f"{self.protocol or 'unnamed'} tunnel"
        return (f"{what} of exchange #{self.exchange_id} ({self.request}) {how} after "
                f"{max(0.0, end - self.start):.3f} s: client → nginx {side(self.inbound)}; "
                f"nginx → client {side(self.outbound)}")
