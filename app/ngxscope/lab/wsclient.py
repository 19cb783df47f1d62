"""A minimal WebSocket client for the lab (RFC 6455, no dependencies): one session through
nginx's ``/ws/`` location to a backend's echo server."""

from __future__ import annotations

import base64
import os
import socket
import ssl
from dataclasses import dataclass, field

from ngxscope.lab.backend import _read_ws_frame, _ws_frame

__all__ = ["WsResult", "ws_session"]


@dataclass(slots=True)
class WsResult:
    status: int = 0
    echoed: list[bytes] = field(default_factory=list)
    pongs: int = 0
    sent_bytes: int = 0
    """Bytes of frames the client sent after the handshake."""


def ws_session(port: int, messages: list[bytes], tls: bool = False, lab_id: str = "",
               path: str = "/ws/echo", fragment: bool = True, ping: bool = True) -> WsResult:
    """Upgrade, send each message (the first one fragmented in two frames), a ping, read the
    echoes, then close. Returns what came back."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = raw
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
    res = WsResult()
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        head = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if lab_id:
            head += f"X-Lab: {lab_id}\r\n"
        sock.sendall((head + "\r\n").encode())
        rfile = sock.makefile("rb")
        status_line = rfile.readline()
        res.status = int(status_line.split()[1])
        while rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        if res.status != 101:
            return res

        def send(data: bytes) -> None:
            res.sent_bytes += len(data)
            sock.sendall(data)

        for i, msg in enumerate(messages):
            if i == 0 and fragment and len(msg) > 1:
                half = len(msg) // 2
                first = bytearray(_ws_frame(1, msg[:half], os.urandom(4)))
                first[0] &= 0x7F  # not final
                send(bytes(first))
                send(_ws_frame(0, msg[half:], os.urandom(4)))
            else:
                send(_ws_frame(2 if i % 2 else 1, msg, os.urandom(4)))
            frame = _read_ws_frame(rfile)
            if frame is None:
                break
            res.echoed.append(frame[2])
        if ping:
            send(_ws_frame(9, b"ping", os.urandom(4)))
            frame = _read_ws_frame(rfile)
            if frame is not None and frame[1] == 10:
                res.pongs += 1
        send(_ws_frame(8, b"\x03\xe8", os.urandom(4)))
        _read_ws_frame(rfile)  # the server's close
        return res
    finally:
        sock.close()
