"""Test data: `make_exchange(**overrides)` builds a realistic `Exchange`.

Each call takes the next id from a module counter and starts 10 ms after the previous
one, so a series of calls gives distinct, ordered exchanges. Override any field; when
`start` is given without `end`, the end keeps the default duration (12.5 ms). Sizes are
computed from the heads and bodies unless overridden. Import it as `from factories import
make_exchange` (pytest puts `tests/` on sys.path through `tests/conftest.py`).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ngxscope.decode.wire import ConnTracker, Segment
from ngxscope.model import Exchange, LifecycleEvent, UpstreamAttempt

__all__ = ["BASE_TIME", "keepalive_health", "make_event", "make_exchange", "one_shot_server", "reset_counter",
           "synthetic_history"]

BASE_TIME = 1_700_000_000.0
"""Unix time of the first default exchange (2023-11-14T22:13:20Z)."""

_DURATION = 0.0125
_counter = itertools.count(1)


def reset_counter() -> None:
    """Restart ids at 1 (and start times at `BASE_TIME` + 10 ms)."""
    global _counter
    _counter = itertools.count(1)


def _head_len(first_line: str, headers: list[tuple[str, str]]) -> int:
    return len(
        (first_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode(
            "utf-8", "surrogateescape"
        )
    )


def make_exchange(**overrides: Any) -> Exchange:
    """A proxied `GET /api/items?page=<id>` answered 200 by an upstream, as nginx logged it."""
    n = next(_counter)
    start = float(overrides.get("start", BASE_TIME + n * 0.01))
    method = overrides.get("method", "GET")
    target = overrides.get("target", f"/api/items?page={n}")
    host = overrides.get("host", "shop.example.test")
    request_headers = overrides.get(
        "request_headers",
        [
            ("Host", host),
            ("User-Agent", "curl/8.5.0"),
            ("Accept", "application/json"),
            ("Cookie", f"session=s{n:06d}"),
        ],
    )
    response_body = overrides.get("response_body", b'{"items":[1,2,3],"page":%d}' % n)
    response_headers = overrides.get(
        "response_headers",
        [
            ("Server", "nginx/1.22.1"),
            ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(response_body))),
            ("Connection", "keep-alive"),
        ],
    )
    request_body = overrides.get("request_body", b"")
    version = overrides.get("version", "HTTP/1.1")
    status = overrides.get("status", 200)
    reason = overrides.get("reason", "OK")
    head_in = _head_len(f"{method} {target} {version}", request_headers)
    head_out = _head_len(f"{version} {status} {reason}", response_headers)
    upstream_start = start + 0.0004
    fields: dict[str, Any] = {
        "id": n,
        "start": start,
        "end": start + _DURATION,
        "pid": 4242,
        "client": f"127.0.0.1:{40000 + n % 20000}",
        "server": "127.0.0.1:8080",
        "tls": False,
        "conn_id": f"4242:{10 + n % 7}:{1_000_000 + n}",
        "conn_seq": 0,
        "method": method,
        "target": target,
        "version": version,
        "host": host,
        "status": status,
        "reason": reason,
        "request_bytes": head_in + len(request_body),
        "response_bytes": head_out + len(response_body),
        "request_headers": request_headers,
        "response_headers": response_headers,
        "request_body": request_body,
        "response_body": response_body,
        "request_body_size": len(request_body),
        "response_body_size": len(response_body),
        "sendfile_bytes": 0,
        "truncated": False,
        "error": None,
        "nginx_ms": 12.0,  # nginx's cached clock trails the true 12.5 ms
        "upstream": [
            UpstreamAttempt(
                addr="127.0.0.1:8081",
                status=status,
                connect_ms=0.0,
                header_ms=9.8,
                duration_ms=10.1,
                request_bytes=head_in + len(request_body),
                response_bytes=head_out + len(response_body),
                reused=True,
                start=upstream_start,
                request_head=f"{method} {target} HTTP/1.0\r\nHost: backend\r\n\r\n",
                response_head=f"HTTP/1.1 {status} {reason}\r\n\r\n",
            )
        ],
    }
    fields.update(overrides)
    return Exchange(**fields)


def make_event(**overrides: Any) -> LifecycleEvent:
    """A "worker-start" lifecycle event at `BASE_TIME`."""
    fields: dict[str, Any] = {
        "ts": BASE_TIME,
        "kind": "worker-start",
        "pid": 4242,
        "detail": "worker 4242 started",
    }
    fields.update(overrides)
    return LifecycleEvent(**fields)


def one_shot_server(answer: bytes) -> tuple[int, list[bytes]]:
    """A loopback server that reads one request head, records it in the returned list, sends
    `answer` and closes: a peer for replay tests. Returns (port, heads received)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        got.append(data)
        conn.sendall(answer)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], got


def keepalive_health(s: socket.socket, lab_ids: list[str]) -> None:
    """`GET /health` once per lab id on the connection `s` (keep-alive; the last one asks to
    close), each answer read to its end (the lab's /health answers "ok\\n")."""
    for i, lab_id in enumerate(lab_ids):
        close = "close" if i == len(lab_ids) - 1 else "keep-alive"
        s.sendall(f"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Lab: {lab_id}\r\n"
                  f"Connection: {close}\r\n\r\n".encode())
        buf = b""
        while not buf.endswith(b"ok\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk


def synthetic_history(seconds: int, per_second: int | Callable[[int], int], seed: int) -> list[Exchange]:
    """The lab's synthetic traffic over the last `seconds` (oldest first, `per_second(k)`
    exchanges in the second `k` seconds ago, or a constant), for a window to show."""
    from ngxscope.pipeline.synthetic import SyntheticSource

    src = SyntheticSource(seed=seed, threaded=False)
    now = time.time()
    rate = per_second if callable(per_second) else (lambda _k: per_second)
    history: list[Exchange] = []
    for k in range(seconds, 0, -1):
        history += src.generate(rate(k), now=now - k + 1, spread=1.0)
    return history


def closed_connection(tracker: ConnTracker, client: str, server: str, t: float) -> None:
    """A connection's handshake and the client's FIN from `t` on, as the socket filter
    passes them, fed to a wire tracker."""
    syn, ack, fin = 0x02, 0x10, 0x01
    for flags, src, dst in ((syn, client, server), (syn | ack, server, client), (ack, client, server),
                            (fin | ack, client, server)):
        tracker.feed(Segment(t, src, dst, 1, flags, b""))
        t += 0.001
