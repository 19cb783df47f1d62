"""A raw-socket HTTP/1.x traffic generator for the lab nginx.

Plain `socket` + `ssl` (unverified context) so the caller controls keep-alive, pipelining,
``Expect: 100-continue`` and chunked request bodies byte for byte. Every request carries an
``X-Lab: <n>`` header (logged by the lab nginx as ``lab_id``) and is recorded in
`Traffic.records` with the exact bytes sent and received, so tests can match each request
to its access-log line. Every public method returns the number of requests it sent.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Response", "SentRequest", "Traffic", "TrafficError"]

_CHUNK = 65536


class TrafficError(RuntimeError):
    """The server answered something the generator cannot frame, or nothing at all."""


@dataclass(slots=True)
class Response:
    """One HTTP response as read off the wire."""

    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    """Body after de-chunking."""
    wire_bytes: int
    """Bytes of this response on the wire (status line, headers, framed body)."""

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    @property
    def will_close(self) -> bool:
        """The server closes the connection after this response."""
        tokens = (self.header("Connection") or "").lower()
        if "close" in tokens:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in tokens


@dataclass(slots=True)
class SentRequest:
    """A request the generator sent and what came back (for matching against the log)."""

    lab_id: str
    tls: bool
    method: str
    target: str
    request_bytes: int
    """Bytes written for this request: head plus body (chunk framing included)."""
    status: int | None = None
    response_bytes: int = 0
    """Final response bytes on the wire (any 100 Continue is in `interim_bytes`)."""
    interim_bytes: int = 0
    interim: list[int] = field(default_factory=list)


class _Conn:
    """A client connection with a receive buffer and an HTTP/1.x response reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(_CHUNK)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self) -> bytes:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                return self._take(idx + 1)
            if not self._fill():
                raise TrafficError("connection closed in the middle of a response head")

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise TrafficError(f"connection closed with {n - len(self.buf)} body bytes due")
        return self._take(n)

    def read_to_close(self) -> bytes:
        while self._fill():
            pass
        return self._take(len(self.buf))

    def read_response(self, method: str, interim: bool = False) -> Response:
        """Read one response. 1xx responses are skipped unless `interim` is true."""
        while True:
            wire = 0
            line = self.read_line()
            wire += len(line)
            parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise TrafficError(f"bad status line {line!r}")
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers: list[tuple[str, str]] = []
            while True:
                hline = self.read_line()
                wire += len(hline)
                if hline in (b"\r\n", b"\n"):
                    break
                name, _, value = hline.decode("latin-1").partition(":")
                headers.append((name.strip(), value.strip()))
            resp = Response(status, reason, version, headers, b"", wire)
            if 100 <= status < 200:
                if interim:
                    return resp
                continue
            break
        if method == "HEAD" or status in (204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = bytearray()
            while True:
                size_line = self.read_line()
                resp.wire_bytes += len(size_line)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:
                        trailer = self.read_line()
                        resp.wire_bytes += len(trailer)
                        if trailer in (b"\r\n", b"\n"):
                            break
                    break
                body += self.read_exact(size)
                crlf = self.read_line()
                resp.wire_bytes += size + len(crlf)
            resp.body = bytes(body)
        elif resp.header("Content-Length") is not None:
            resp.body = self.read_exact(int(resp.header("Content-Length") or 0))
            resp.wire_bytes += len(resp.body)
        else:
            resp.body = self.read_to_close()
            resp.wire_bytes += len(resp.body)
        return resp


class Traffic:
    """Raw HTTP/1.x clients against the lab nginx's plain and TLS ports."""

    def __init__(
        self, plain_port: int, tls_port: int, host: str = "127.0.0.1", timeout: float = 15.0
    ) -> None:
        self.plain_port = plain_port
        self.tls_port = tls_port
        self.host = host
        self.timeout = timeout
        self.records: list[SentRequest] = []
        """Every request sent, in the order they were written (across threads)."""
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE

    # -- plumbing -------------------------------------------------------------------------
    def connect(self, tls: bool) -> _Conn:
        """Open a connection (TLS handshake done) to the plain or the TLS port."""
        port = self.tls_port if tls else self.plain_port
        sock = socket.create_connection((self.host, port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            sock = self._ctx.wrap_socket(sock, server_hostname="localhost")
        return _Conn(sock)

    def build(
        self,
        tls: bool,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "HTTP/1.1",
        content_length: bool = True,
    ) -> tuple[bytes, SentRequest]:
        """Serialize a request (head + body as given) and register its `SentRequest`."""
        with self._lock:
            lab_id = str(next(self._ids))
        lines = [
            f"{method} {target} {version}",
            "Host: localhost",
            "User-Agent: ngxscope-lab",
            f"X-Lab: {lab_id}",
        ]
        lines += [f"{k}: {v}" for k, v in headers]
        if body and content_length:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        rec = SentRequest(lab_id, tls, method, target, len(raw))
        with self._lock:
            self.records.append(rec)
        return raw, rec

    @staticmethod
    def _note(rec: SentRequest, resp: Response) -> Response:
        rec.status = resp.status
        rec.response_bytes = resp.wire_bytes
        return resp

    def request(
        self,
        tls: bool,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Response:
        """One request on a fresh connection, closed afterwards."""
        conn = self.connect(tls)
        try:
            raw, rec = self.build(tls, method, target, headers, body)
            conn.send(raw)
            return self._note(rec, conn.read_response(method))
        finally:
            conn.close()

    # -- scenarios (each returns the number of requests sent) -----------------------------
    def keepalive(self, tls: bool, paths: Iterable[str]) -> int:
        """GET each path in turn on one keep-alive connection (reconnect if nginx closes)."""
        count = 0
        conn = self.connect(tls)
        try:
            for path in paths:
                if conn.eof:
                    conn.close()
                    conn = self.connect(tls)
                raw, rec = self.build(tls, "GET", path)
                conn.send(raw)
                count += 1
                resp = self._note(rec, conn.read_response("GET"))
                if resp.will_close:
                    conn.eof = True
        finally:
            conn.close()
        return count

    def pipelined(self, tls: bool, paths: Sequence[str]) -> int:
        """Write all GETs in one send, then read all the responses."""
        built = [self.build(tls, "GET", p) for p in paths]
        conn = self.connect(tls)
        try:
            conn.send(b"".join(raw for raw, _ in built))
            for _, rec in built:
                self._note(rec, conn.read_response("GET"))
        finally:
            conn.close()
        return len(built)

    def head(self, tls: bool, paths: Sequence[str] = ("/static/page.html", "/api/head")) -> int:
        """HEAD requests on one connection (no body follows a Content-Length)."""
        conn = self.connect(tls)
        try:
            for path in paths:
                raw, rec = self.build(tls, "HEAD", path)
                conn.send(raw)
                self._note(rec, conn.read_response("HEAD"))
        finally:
            conn.close()
        return len(paths)

    def post(
        self, tls: bool, size: int, path: str = "/upload", expect_continue: bool = False
    ) -> int:
        """POST a `size`-byte Content-Length body; optionally ``Expect: 100-continue`` first."""
        body = bytes(i % 251 for i in range(size))
        headers = [("Content-Type", "application/octet-stream")]
        if expect_continue:
            headers.append(("Expect", "100-continue"))
        raw, rec = self.build(tls, "POST", path, headers, body)
        conn = self.connect(tls)
        try:
            if expect_continue:
                head = raw[: len(raw) - len(body)]
                conn.send(head)
                first = conn.read_response("POST", interim=True)
                if first.status != 100:  # final answer without reading the body
                    self._note(rec, first)
                    return 1
                rec.interim.append(first.status)
                rec.interim_bytes += first.wire_bytes
                conn.send(body)
            else:
                conn.send(raw)
            self._note(rec, conn.read_response("POST"))
        finally:
            conn.close()
        return 1

    def chunked_post(
        self, tls: bool, size: int, path: str = "/upload", chunk_size: int = 8192
    ) -> int:
        """POST a `size`-byte body with ``Transfer-Encoding: chunked``."""
        data = bytes(i % 251 for i in range(size))
        framed = bytearray()
        for off in range(0, size, chunk_size):
            piece = data[off : off + chunk_size]
            framed += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        framed += b"0\r\n\r\n"
        raw, rec = self.build(
            tls,
            "POST",
            path,
            [("Transfer-Encoding", "chunked")],
            bytes(framed),
            content_length=False,
        )
        conn = self.connect(tls)
        try:
            conn.send(raw)
            self._note(rec, conn.read_response("POST"))
        finally:
            conn.close()
        return 1

    def conditional(self, tls: bool, path: str = "/static/page.html") -> int:
        """GET `path`, then GET it again with ``If-None-Match`` (nginx answers 304)."""
        conn = self.connect(tls)
        try:
            raw, rec = self.build(tls, "GET", path)
            conn.send(raw)
            first = self._note(rec, conn.read_response("GET"))
            etag = first.header("ETag")
            if etag is None:
                raise TrafficError(f"no ETag on {path}")
            raw, rec = self.build(tls, "GET", path, [("If-None-Match", etag)])
            conn.send(raw)
            self._note(rec, conn.read_response("GET"))
        finally:
            conn.close()
        return 2

    def connection_close(self, tls: bool, path: str) -> int:
        """GET with ``Connection: close``; read until nginx closes."""
        conn = self.connect(tls)
        try:
            raw, rec = self.build(tls, "GET", path, [("Connection", "close")])
            conn.send(raw)
            self._note(rec, conn.read_response("GET"))
            conn.read_to_close()
        finally:
            conn.close()
        return 1

    def http10(self, tls: bool, path: str) -> int:
        """An HTTP/1.0 GET (no keep-alive): nginx closes after the response."""
        conn = self.connect(tls)
        try:
            raw, rec = self.build(tls, "GET", path, version="HTTP/1.0")
            conn.send(raw)
            self._note(rec, conn.read_response("GET"))
        finally:
            conn.close()
        return 1

    # -- mixes ----------------------------------------------------------------------------
    def round(self, tls: bool) -> int:
        """One pass over every scenario on one port; returns the requests sent."""
        n = 0
        n += self.keepalive(
            tls,
            [
                "/static/small.txt",
                "/static/page.html",
                "/static/data.json",
                "/health",
                "/204",
                "/no/such/thing",
                "/api/items?id=1",
                "/api/chunked?n=5",
                "/api/big?kb=100",
            ],
        )
        n += self.pipelined(tls, ["/static/small.txt", "/api/echo", "/health", "/204", "/missing"])
        n += self.head(tls)
        n += self.post(tls, 1000)
        n += self.post(tls, 100 * 1024)
        n += self.post(tls, 70 * 1024, expect_continue=True)
        n += self.chunked_post(tls, 50 * 1024)
        n += self.conditional(tls)
        n += self.connection_close(tls, "/static/big.bin")
        n += self.http10(tls, "/static/page.html")
        n += self.http10(tls, "/api/chunked?n=3")
        n += self.keepalive(tls, ["/fail/500", "/fail/502", "/fail/503", "/api/after-fail"])
        n += self.keepalive(tls, ["/flaky/a", "/flaky/b", "/flaky/c"])
        n += self.keepalive(tls, ["/slow/?ms=30"])
        return n

    def run_mix(self, rounds: int, concurrency: int = 4) -> int:
        """Run `rounds` full mixes (plain and TLS each) from `concurrency` threads."""
        totals = [0] * concurrency
        errors: list[BaseException] = []

        def work(idx: int) -> None:
            try:
                for _ in range(idx, rounds, concurrency):
                    totals[idx] += self.round(False) + self.round(True)
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(i,), name=f"lab-traffic-{i}")
            for i in range(concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return sum(totals)

    def run_forever(self, stop_event: threading.Event, rate_per_s: float = 20.0) -> int:
        """A realistic rate-limited mix until `stop_event` is set (for the demo)."""
        actions = [
            lambda tls: self.keepalive(
                tls, ["/static/page.html", "/static/small.txt", "/api/users?id=7"]
            ),
            lambda tls: self.keepalive(tls, ["/api/items", "/api/chunked?n=4"]),
            lambda tls: self.post(tls, 2048),
            lambda tls: self.conditional(tls),
            lambda tls: self.keepalive(tls, ["/health", "/favicon.ico"]),
            lambda tls: self.keepalive(tls, ["/slow/?ms=120"]),
            lambda tls: self.keepalive(tls, ["/flaky/x"]),
            lambda tls: self.keepalive(tls, ["/fail/503"]),
            lambda tls: self.pipelined(tls, ["/static/data.json", "/204"]),
            lambda tls: self.head(tls, ["/static/page.html"]),
            lambda tls: self.post(tls, 96 * 1024),
            lambda tls: self.connection_close(tls, "/static/big.bin"),
        ]
        total = 0
        start = time.monotonic()
        for i in itertools.count():
            if stop_event.is_set():
                break
            try:
                total += actions[i % len(actions)](i % 3 == 1)
            except (OSError, TrafficError):
                if stop_event.wait(0.5):  # nginx restarting or going away
                    break
            due = start + total / max(rate_per_s, 0.001)
            if stop_event.wait(max(0.0, due - time.monotonic())):
                break
        return total
