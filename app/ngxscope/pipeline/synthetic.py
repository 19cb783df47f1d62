"""`SyntheticSource`: realistic fake nginx traffic for tests, the bench and screenshots.

Four workers, three virtual hosts, keep-alive connections, mostly-2xx statuses with a
sprinkling of 3xx/4xx/5xx, log-normal latency with a long tail, two upstream peers
(with the occasional 502-then-retry), JSON bodies (some chunked + gzip), binary images,
sendfile'd static files and truncated payloads. Deterministic for a given seed.
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from typing import Any

from ngxscope.model import Exchange, LifecycleEvent, UpstreamAttempt

from .source import MAX_PER_POLL

__all__ = ["SyntheticSource", "chunked", "sample_exchange"]

PEERS = ("10.0.0.2:8080", "10.0.0.3:8080")
HOSTS = ("api.example.com", "shop.example.com", "static.example.com")
SERVER = "10.0.0.1:443"
PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e5273a0f0000000049454e44ae426082"
)


def chunked(body: bytes, size: int = 64) -> bytes:
    """Frame `body` with Transfer-Encoding: chunked (as it crosses the wire)."""
    out = bytearray()
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


def _json_body(i: int) -> bytes:
    items = [
        {"id": 1000 + i * 7 + k, "name": f"item-{k}", "price": round(9.5 + k * 1.25, 2),
         "tags": ["new", "sale"][: 1 + k % 2]}
        for k in range(4)
    ]
    return json.dumps({"items": items, "page": i, "more": i < 3}).encode()


_HDR_CACHE: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[tuple[str, str]]] = {}


def _req_headers(host: str, method: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Request headers; identical lists are shared (exchanges never mutate them)."""
    key = (host, method, tuple(extra))
    cached = _HDR_CACHE.get(key)
    if cached is None:
        cached = _HDR_CACHE[key] = _make_req_headers(host, method, extra)
    return cached


def _make_req_headers(
    host: str, method: str, extra: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    hdrs = [("Host", host), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
            ("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate, br")]
    if method in ("POST", "PUT"):
        hdrs.append(("Content-Type", "application/json"))
    return hdrs + extra


class _Templates:
    """Precomputed request/response shapes: generating an exchange only copies refs."""

    def __init__(self) -> None:
        plain = _json_body(1)
        gz = gzip.compress(_json_body(2), mtime=0)
        self.api_plain = (
            [("Server", "nginx/1.22.1"), ("Content-Type", "application/json"),
             ("Content-Length", str(len(plain))), ("Connection", "keep-alive")],
            plain,
        )
        self.api_gzip = (
            [("Server", "nginx/1.22.1"), ("Content-Type", "application/json"),
             ("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"),
             ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")],
            chunked(gz),
        )
        self.png = (
            [("Server", "nginx/1.22.1"), ("Content-Type", "image/png"),
             ("Content-Length", str(len(PNG_1x1))), ("Cache-Control", "max-age=86400")],
            PNG_1x1,
        )
        self.html_404 = (
            [("Server", "nginx/1.22.1"), ("Content-Type", "text/html"),
             ("Content-Length", "153")],
            b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>"
            b"404 Not Found</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n"
            b"</html>\r\n",
        )
        self.redirect = (
            [("Server", "nginx/1.22.1"), ("Location", "https://shop.example.com/cart/"),
             ("Content-Length", "0")],
            b"",
        )
        self.post_body = json.dumps({"sku": "A-1001", "qty": 2}).encode()


_T: _Templates | None = None


def _ri(rng: random.Random, lo: int, hi: int) -> int:
    """randint without its overhead (the generator runs at 20k+/s)."""
    return lo + int(rng.random() * (hi - lo + 1))


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[int(rng.random() * len(options))]


def _location(host: str, target: str) -> str:
    """The location block the made-up configuration would pick for `target`."""
    if host == HOSTS[2]:
        return r"~* \.(png|js)$"
    if target.startswith("/api/v2/"):
        return "^~ /api/v2/"
    if target.startswith("/api/"):
        return "= /api/v1/login" if target == "/api/v1/login" else "/api/"
    return "= /checkout" if target == "/checkout" else "/"


def _templates() -> _Templates:
    global _T
    if _T is None:
        _T = _Templates()
    return _T


class SyntheticSource:
    """Generates `rate_per_s` exchanges per second of wall time, ending "now".

    With `threaded=True` (the default) a producer thread makes the exchanges every 20 ms
    and queues them, like `StreamSource`'s reader thread; `poll()` only swaps lists. With
    `threaded=False` they are made inside `poll()` (deterministic, for tests).
    """

    def __init__(
        self,
        rate_per_s: float = 200.0,
        *,
        seed: int = 7,
        workers: int = 4,
        lose_events: bool = False,
        threaded: bool = True,
    ) -> None:
        self.rate = float(rate_per_s)
        self.threaded = threaded
        self._lock = threading.Lock()
        self._queue: list[Exchange] = []
        self._thread: threading.Thread | None = None
        self.rng = random.Random(seed)
        self.pids = [4100 + 17 * i for i in range(workers)]
        self.lose_events = lose_events
        self._t = _templates()
        self._running = False
        self._last = 0.0
        self._carry = 0.0
        self._next_id = 1
        self._conns: list[list[Any]] = []  # [conn_id, client, pid, seq, tls]
        self._events: list[LifecycleEvent] = []
        self._last_stats = 0.0
        self._made_since_stats = 0
        self._truncated_since_stats = 0
        self._pending_stats: dict[str, Any] | None = None
        self._stats_totals = {"events": 0, "lost": 0, "truncated": 0, "requests": 0}

    # -- protocol --------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._last = time.time()
        self._last_stats = self._last
        self._events.append(LifecycleEvent(self._last, "attach", self.pids[0] - 1,
                                           "synthetic nginx master (simulated)"))
        for pid in self.pids:
            self._events.append(LifecycleEvent(self._last, "worker-start", pid, "worker seen"))
        if self.threaded:
            self._thread = threading.Thread(target=self._produce, name="ngxscope-synthetic",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _produce(self) -> None:
        while self._running:
            time.sleep(0.02)
            batch, stats, events = self._make_due()
            with self._lock:
                self._queue.extend(batch)
                if len(self._queue) > 400_000:  # nobody polls: keep memory bounded
                    del self._queue[: len(self._queue) - 400_000]
                self._events.extend(events)
                if stats is not None:
                    self._pending_stats = stats

    def _make_due(self) -> tuple[list[Exchange], dict[str, Any] | None, list[LifecycleEvent]]:
        """Exchanges due since the last call, stats once a second, worker restarts."""
        now = time.time()
        dt = max(0.0, now - self._last)
        self._last = now
        want = self.rate * dt + self._carry
        n = int(want)
        self._carry = want - n
        n = min(n, 100_000)
        out = self.generate(n, now=now, spread=dt)
        self._made_since_stats += n
        self._truncated_since_stats += sum(1 for e in out if e.truncated)
        stats = None
        events: list[LifecycleEvent] = []
        if now - self._last_stats >= 1.0:
            stats = self._stats(now)
            if self.rng.random() < 0.02 and len(self.pids) > 1:
                self._cycle_worker(now, events)
        return out, stats, events

    def alive(self) -> bool:
        return self._running

    def error(self) -> str | None:
        return None

    def describe(self) -> str:
        return f"synthetic traffic, {self.rate:,.0f} req/s"

    def poll(self) -> tuple[list[Exchange], list[LifecycleEvent], dict[str, Any] | None]:
        if not self._running:
            return [], [], None
        if self.threaded:
            with self._lock:
                out = self._queue[:MAX_PER_POLL]
                del self._queue[:MAX_PER_POLL]
                events, self._events = self._events, []
                stats, self._pending_stats = self._pending_stats, None
            return out, events, stats
        out, stats, new_events = self._make_due()
        events, self._events = [*self._events, *new_events], []
        return out, events, stats

    # -- generation ------------------------------------------------------------------

    def _stats(self, now: float) -> dict[str, Any]:
        tot = self._stats_totals
        tot["requests"] += self._made_since_stats
        tot["events"] += self._made_since_stats * 6
        tot["truncated"] += self._truncated_since_stats
        self._truncated_since_stats = 0
        if self.lose_events:
            tot["lost"] += self.rng.randint(10, 400)
        self._made_since_stats = 0
        self._last_stats = now
        return {"ts": now, "method": "synthetic", "workers": list(self.pids), **tot}

    def _cycle_worker(self, now: float, events: list[LifecycleEvent]) -> None:
        i = self.rng.randrange(len(self.pids))
        old = self.pids[i]
        new = max(self.pids) + 13
        self.pids[i] = new
        self._conns = [c for c in self._conns if c[2] != old]
        events.append(LifecycleEvent(now, "worker-exit", old, "exited with code 0"))
        events.append(LifecycleEvent(now, "worker-start", new, "new worker"))

    def _conn(self) -> list[Any]:
        rng = self.rng
        if self._conns and rng.random() < 0.8:
            c = self._conns[int(rng.random() * len(self._conns))]
            c[3] += 1
            return c
        pid = self.pids[int(rng.random() * len(self.pids))]
        client = f"203.0.113.{_ri(rng, 2, 254)}:{_ri(rng, 32768, 60999)}"
        c = [f"{pid}:{_ri(rng, 8, 900)}:{self._next_id}", client, pid, 0, rng.random() < 0.7]
        self._conns.append(c)
        if len(self._conns) > 64:
            del self._conns[0]
        return c

    def generate(self, n: int, *, now: float | None = None, spread: float = 1.0) -> list[Exchange]:
        """Make `n` exchanges that ended within `spread` seconds before `now`."""
        now = time.time() if now is None else now
        rng = self.rng
        out = []
        for _ in range(n):
            out.append(self._one(now - rng.random() * spread, rng))
        out.sort(key=lambda e: e.end)
        for e in out:
            e.id = self._next_id
            self._next_id += 1
        return out

    def _one(self, end: float, rng: random.Random) -> Exchange:
        t = self._t
        conn = self._conn()
        r = rng.random()
        host = HOSTS[0] if r < 0.55 else HOSTS[1] if r < 0.8 else HOSTS[2]
        method = "GET"
        upstream: list[UpstreamAttempt] = []
        sendfile = 0
        req_body = b""
        truncated = False
        error = None
        if host == HOSTS[2]:
            k = int(rng.random() * 40)
            target = f"/assets/img/p{k}.png" if k % 3 else f"/assets/app.{k:x}e1.js"
            dur = rng.lognormvariate(-1.2, 0.6)
            status = 304 if rng.random() < 0.25 else 200
            hdrs, body = t.png if status == 200 else ([("Server", "nginx/1.22.1")], b"")
            if target.endswith(".js") and status == 200:
                sendfile = 48_213 + k * 977
                hdrs, body = [("Server", "nginx/1.22.1"),
                              ("Content-Type", "application/javascript"),
                              ("Content-Length", str(sendfile))], b""
                truncated = True
        else:
            dur = rng.lognormvariate(2.6, 0.8)
            if rng.random() < 0.01:
                dur *= 40  # the long tail
            if rng.random() < 0.15:
                method = "POST" if rng.random() < 0.8 else "PUT"
                req_body = t.post_body
            if host == HOSTS[0]:
                target = _pick(rng, ("/api/v1/items", "/api/v1/items?page=2", "/api/v1/cart",
                                     "", "/api/v1/login", "/api/v2/search?q=lamp&sort=price"))
                if not target:
                    target = f"/api/v1/items/{_ri(rng, 1, 5000)}"
            else:
                target = _pick(rng, ("/", "/cart/", "/product/lamp-42", "/checkout",
                                     "/category/lighting?page=3"))
            s = rng.random()
            status = (200 if s < 0.86 else 201 if s < 0.88 else 302 if s < 0.91
                      else 404 if s < 0.955 else 401 if s < 0.97 else 500 if s < 0.985
                      else 502 if s < 0.995 else 503)
            if method == "POST" and status == 200:
                status = 201
            hdrs, body = (t.api_gzip if rng.random() < 0.5 else t.api_plain)
            if status == 404:
                hdrs, body = t.html_404
            elif status == 302:
                hdrs, body = t.redirect
            upstream = self._attempts(end, dur, status, rng)
            if rng.random() < 0.002:
                error, status, hdrs, body = "client closed the connection (499)", None, [], b""
        start = end - dur / 1000.0
        if len(body) > 300 and rng.random() < 0.03:
            body, truncated = body[:200], True
        status_line = {200: "OK", 201: "Created", 302: "Found", 304: "Not Modified",
                       401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error",
                       502: "Bad Gateway", 503: "Service Unavailable"}
        extra = [("Cookie", "session=9f2c41d07b")] if host == HOSTS[1] else []
        head_len = 180 + len(target) + 30 * len(extra)
        body_size = sendfile or len(body)
        return Exchange(
            id=0, start=start, end=end, pid=conn[2], client=conn[1], server=SERVER,
            tls=conn[4], conn_id=conn[0], conn_seq=conn[3], method=method, target=target,
            version="HTTP/1.1", host=host, status=status,
            reason=status_line.get(status or 0, ""),
            request_bytes=head_len + len(req_body), response_bytes=160 + body_size,
            request_headers=_req_headers(host, method, extra), response_headers=hdrs,
            request_body=req_body, response_body=body, request_body_size=len(req_body),
            response_body_size=body_size, sendfile_bytes=sendfile, truncated=truncated,
            error=error, upstream=upstream, server_block=host, location=_location(host, target),
            location_via="config",
        )

    def _attempts(
        self, end: float, dur: float, status: int, rng: random.Random
    ) -> list[UpstreamAttempt]:
        start = end - dur / 1000.0
        t0 = start + min(0.4, dur * 0.05) / 1000.0
        atts = []
        first = int(rng.random() * 2)
        if status == 502 or rng.random() < 0.01:
            # first peer fails fast, nginx retries on the other one
            # a final 502 spent most of the request in its one attempt
            spent = dur * (0.9 if status == 502 else 0.1)
            atts.append(UpstreamAttempt(PEERS[first], status=502, connect_ms=0.3,
                                        header_ms=spent, duration_ms=spent,
                                        request_bytes=420, response_bytes=160, start=t0))
            t0 += spent * 1.02 / 1000.0
            first = 1 - first
            if status == 502:
                return atts
        up_dur = dur * 0.85 if atts else dur * 0.92
        reused = rng.random() < 0.8
        atts.append(UpstreamAttempt(
            PEERS[first], status=status, connect_ms=0.0 if reused else 0.4,
            header_ms=up_dur * 0.8, duration_ms=up_dur, request_bytes=430,
            response_bytes=900, reused=reused, start=t0,
        ))
        return atts


def sample_exchange(kind: str = "json") -> Exchange:
    """One hand-made exchange for tests and the detail-pane screenshot."""
    src = SyntheticSource(seed=3)
    t = _templates()
    now = time.time()
    ex = src._one(now, random.Random(5))
    ex.id = 42
    ex.host, ex.method, ex.target, ex.status, ex.reason = (
        "api.example.com", "POST", "/api/v1/cart?currency=EUR", 200, "OK")
    ex.request_body = t.post_body
    ex.request_body_size = len(t.post_body)
    ex.request_headers = _req_headers(ex.host, "POST", [("Content-Length", str(len(t.post_body)))])
    ex.start = now - 0.0384
    ex.end = now
    ex.truncated = False
    ex.sendfile_bytes = 0
    ex.error = None
    if kind == "binary":
        ex.response_headers, ex.response_body = t.png
    else:
        ex.response_headers, ex.response_body = t.api_gzip
    ex.response_body_size = len(ex.response_body)
    ex.upstream = [
        UpstreamAttempt(PEERS[0], status=502, connect_ms=0.4, header_ms=3.1, duration_ms=3.2,
                        request_bytes=420, response_bytes=160, start=ex.start + 0.0006),
        UpstreamAttempt(PEERS[1], status=200, connect_ms=0.0, header_ms=27.5, duration_ms=31.8,
                        request_bytes=430, response_bytes=900, reused=True,
                        start=ex.start + 0.0045),
    ]
    return ex
