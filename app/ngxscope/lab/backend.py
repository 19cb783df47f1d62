"""A small real HTTP/1.1 upstream for the lab nginx (keep-alive, chunked, slow, error statuses).

Run as ``python -m ngxscope.lab.backend --port P --name NAME``. Endpoints match on the
last path segment(s) under any prefix, so ``/api/echo`` and ``/upload/echo`` behave alike:

- ``.../echo``          JSON with method, path, request body size and backend name
- ``.../slow?ms=N``     sleeps N ms, then a small JSON body
- ``.../status/NNN``    answers status NNN with a small body
- ``.../chunked?n=K``   ``Transfer-Encoding: chunked`` response with K chunks
- ``.../big?kb=N``      an N KiB body
- anything else         small JSON with the backend name and path
- ``/_lab/delay?ms=N``  (sent to the backend directly, not through nginx) from now on, every
  request to this backend waits N ms more before answering: a slow peer, for diff tests
- ``.../echo`` with any other ``Upgrade``: 101, then a raw byte echo until the client's EOF
- ``.../echo`` with ``Upgrade: websocket``: an RFC 6455 echo server (text and binary
  messages, fragmented ones too, ping → pong, close → close)

The request body is always read completely (Content-Length or chunked) so the
connection stays usable for keep-alive.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["BackendHandler", "main", "make_server"]

_STATUS_RE = re.compile(r"/status/(\d{3})/?$")
_MAX_SLEEP_MS = 30_000


class BackendHandler(BaseHTTPRequestHandler):
    """Request handler; the backend name lives on the server object."""

    protocol_version = "HTTP/1.1"
    server_version = "ngxscope-lab"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the lab runs many requests."""

    # -- request body --------------------------------------------------------------------
    def _read_body(self) -> int:
        """Read and discard the request body, returning its size."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while True:
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        return total
                    remaining -= len(chunk)
                    total += len(chunk)
                self.rfile.readline(3)  # CRLF after the chunk data
            return total
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        return length - remaining

    # -- responses -----------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)  # type: ignore[attr-defined]
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, (json.dumps(obj, separators=(",", ":")) + "\n").encode())

    # -- websocket -----------------------------------------------------------------------
    def _websocket(self) -> None:
        """RFC 6455 handshake, then echo every message until the client closes."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        message = bytearray()
        opcode0 = 0
        while True:
            frame = _read_ws_frame(self.rfile)
            if frame is None:
                return
            fin, opcode, payload = frame
            if opcode == 8:  # close: answer with the same code
                self.wfile.write(_ws_frame(8, payload[:2]))
                self.wfile.flush()
                return
            if opcode == 9:
                self.wfile.write(_ws_frame(10, payload))
                self.wfile.flush()
                continue
            if opcode == 10:
                continue
            if opcode in (1, 2):
                opcode0 = opcode
                message = bytearray()
            message += payload
            if fin:
                self.wfile.write(_ws_frame(opcode0 or 2, bytes(message)))
                self.wfile.flush()

    def _raw_tunnel(self, protocol: str) -> None:
        """Any other upgrade protocol: 101, then every byte read is echoed until EOF."""
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", protocol)
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            data = self.rfile.read1(65536)
            if not data:
                return
            self.wfile.write(data)
            self.wfile.flush()

    def _handle(self) -> None:
        upgrade = self.headers.get("Upgrade", "")
        if upgrade and urlsplit(self.path).path.endswith("/echo"):
            if upgrade.lower() == "websocket":
                self._websocket()
            else:
                self._raw_tunnel(upgrade)
            return
        body_size = self._read_body()
        url = urlsplit(self.path)
        if url.path == "/_lab/delay":
            ms = min(int(parse_qs(url.query).get("ms", ["0"])[0]), _MAX_SLEEP_MS)
            self.server.delay_ms = max(0, ms)  # type: ignore[attr-defined]
            self._json(200, {"delay_ms": ms})
            return
        delay = getattr(self.server, "delay_ms", 0)
        if delay:
            time.sleep(delay / 1000.0)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query)
        name: str = self.server.name  # type: ignore[attr-defined]
        base = {"backend": name, "method": self.command, "path": self.path}

        if path.endswith("/echo"):
            self._json(200, {**base, "body_size": body_size})
            return
        if path.endswith("/slow"):
            ms = min(int(query.get("ms", ["200"])[0]), _MAX_SLEEP_MS)
            time.sleep(ms / 1000.0)
            self._json(200, {**base, "slept_ms": ms})
            return
        m = _STATUS_RE.search(path)
        if m:
            status = int(m.group(1))
            if status < 200 or status > 599:
                status = 400
            self._json(status, {**base, "status": status})
            return
        if path.endswith("/chunked"):
            n = max(0, int(query.get("n", ["4"])[0]))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Backend", name)
            self.end_headers()
            if self.command != "HEAD":
                out = bytearray()
                for i in range(n):
                    data = f"chunk {i} from {name}\n".encode()
                    out += f"{len(data):x}\r\n".encode() + data + b"\r\n"
                out += b"0\r\n\r\n"
                self.wfile.write(bytes(out))
            return
        if path.endswith("/big"):
            kb = max(0, int(query.get("kb", ["64"])[0]))
            line = (b"0123456789abcdef" * 64)[:1024]
            self._send(200, line * kb, "application/octet-stream")
            return
        self._json(200, base)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()


def _ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final WebSocket frame (masked when `mask` is given: client to server)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def _read_ws_frame(rfile: Any) -> tuple[bool, int, bytes] | None:
    """(fin, opcode, unmasked payload) of the next frame, or None at end of stream."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b""
    payload = rfile.read(n)
    if len(payload) < n:
        return None
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin, opcode, payload


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], name: str) -> None:
        self.name = name
        super().__init__(addr, BackendHandler)


def make_server(port: int, name: str, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Create (bind) a backend server; call ``serve_forever()`` on it."""
    return _Server((host, port), name)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: serve until killed."""
    parser = argparse.ArgumentParser(description="ngxscope lab upstream backend")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = make_server(args.port, args.name, args.host)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
