"""A raw HTTP/2 client for the lab (the ``h2`` library over TLS with ALPN ``h2``).

`H2Client` keeps one connection open; `H2Client.request_many` sends every request at once,
multiplexed on their own streams, then reads until all are answered (what browsers and
gRPC clients do). `h2_exchange` is the one-shot form.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

__all__ = ["H2Client", "H2Response", "h2_exchange"]

Request = tuple[str, str, list[tuple[str, str]], bytes]
"""(method, path, extra headers, body)"""


@dataclass(slots=True)
class H2Response:
    """What came back on one stream."""

    stream_id: int
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reset: bool = False


class H2Client:
    """One HTTP/2 connection over TLS to 127.0.0.1:port."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.port = port
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            self.sock.close()
            raise RuntimeError(f"server did not negotiate h2 (got {self.sock.selected_alpn_protocol()!r})")
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request_many(self, requests: list[Request]) -> list[H2Response]:
        """Send all requests multiplexed; return the responses in request order."""
        conn = self.conn
        out: dict[int, H2Response] = {}
        bodies: dict[int, bytes] = {}
        order = []
        for method, path, headers, body in requests:
            sid = conn.get_next_available_stream_id()
            hdrs = [(":method", method), (":path", path), (":scheme", "https"),
                    (":authority", f"localhost:{self.port}"), *headers]
            if body:
                hdrs.append(("content-length", str(len(body))))
            conn.send_headers(sid, hdrs, end_stream=not body)
            if body:
                bodies[sid] = body
            out[sid] = H2Response(sid)
            order.append(sid)
        pending = set(order)
        while pending:
            for sid, rest in list(bodies.items()):  # as much as flow control allows
                while rest:
                    n = min(len(rest), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if n <= 0:
                        break
                    conn.send_data(sid, rest[:n], end_stream=n == len(rest))
                    rest = rest[n:]
                if rest:
                    bodies[sid] = rest
                else:
                    del bodies[sid]
            self.sock.sendall(conn.data_to_send())
            data = self.sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    r = out[ev.stream_id]
                    r.headers = [(str(k), str(v)) for k, v in ev.headers]
                    r.status = int(dict(r.headers).get(":status", "0"))
                elif isinstance(ev, h2.events.TrailersReceived):
                    out[ev.stream_id].trailers = [(str(k), str(v)) for k, v in ev.headers]
                elif isinstance(ev, h2.events.DataReceived):
                    out[ev.stream_id].body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    pending.discard(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    out[ev.stream_id].reset = True
                    pending.discard(ev.stream_id)
                    bodies.pop(ev.stream_id, None)
        self.sock.sendall(conn.data_to_send())
        return [out[sid] for sid in order]

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def h2_exchange(port: int, requests: list[Request], host: str = "127.0.0.1",
                timeout: float = 10.0) -> list[H2Response]:
    """Send the requests multiplexed on one new connection; responses in request order."""
    with H2Client(port, host, timeout) as client:
        return client.request_many(requests)
