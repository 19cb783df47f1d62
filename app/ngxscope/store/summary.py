"""`ngxscope stats`: the figures of a session as a text table (or JSON), for a terminal.

Percentiles are exact, by the nearest-rank method (the smallest value with at least p% of
the values at or below it), computed from every exchange's duration; `duration_ms` is the
true time from the first request byte read to the last response byte written. Upstream
figures come from the attempts (`$upstream_*`): an attempt is an error when the peer gave
no status or a 5xx; a "retry" is an attempt that was not its request's first; "next" counts
the attempts after which nginx moved on to another attempt. Memory grows with 8 bytes per
exchange (durations) plus one entry per distinct path, worker and peer.

TCP proxy sessions (nginx's stream module) count as requests too, with their own line
("tcp sessions"); their "path" is "TCP <listener>", and an attempt of theirs is an error when
it never connected (a TCP peer has no status).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ngxscope.model import Exchange
from ngxscope.store.kcounted import Counted, CountedGroup, merged_percentiles
from ngxscope.store.routes import RouteTemplater

__all__ = ["GroupStats", "PathRow", "PeerStats", "Summary", "WorkerStats", "format_summary", "location_key",
           "percentile", "summarize"]

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of ascending values; None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(p / 100.0 * n - 1e-9))
    return float(sorted_values[min(rank, n) - 1])


def _class(status: int | None) -> str:
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


def _classes() -> dict[str, int]:
    return dict.fromkeys(CLASSES, 0)


@dataclass(slots=True)
class Latency:
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: array[float]) -> Latency:
        s = sorted(values)
        return cls(percentile(s, 50), percentile(s, 95), percentile(s, 99),
                   s[-1] if s else None)


@dataclass(slots=True)
class PathRow:
    path: str
    requests: int
    total_ms: float
    mean_ms: float


@dataclass(slots=True)
class GroupStats:
    """The figures of one part of the configuration or one route: "server > location"."""

    key: str
    requests: int = 0
    errors: int = 0
    """Responses with a 5xx status, or none."""
    error_rate: float = 0.0
    latency: Latency = field(default_factory=Latency)
    response_bytes: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    """Requests per `Exchange.answer` (cache hits, limit rejections, returns, client aborts)."""
    _ms: array[float] = field(default_factory=lambda: array("d"))

    def add(self, ex: Exchange) -> None:
        self.requests += 1
        if ex.answer:
            self.answers[ex.answer] = self.answers.get(ex.answer, 0) + 1
        self.errors += ex.status is None or ex.status >= 500
        self.response_bytes += ex.response_bytes
        self._ms.append(ex.duration_ms)

    def finish(self) -> None:
        self.latency = Latency.of(self._ms)
        self.error_rate = self.errors / self.requests if self.requests else 0.0


def location_key(ex: Exchange) -> str:
    """"server_block > location" of an exchange ("?" for a part not known)."""
    return f"{ex.server_block or '?'} \u203a {ex.location or '?'}"


@dataclass(slots=True)
class WorkerStats:
    pid: int
    requests: int = 0
    classes: dict[str, int] = field(default_factory=_classes)
    errors: int = 0
    latency: Latency = field(default_factory=Latency)
    _ms: array[float] = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class PeerStats:
    addr: str
    requests: int = 0
    classes: dict[str, int] = field(default_factory=_classes)
    errors: int = 0
    error_rate: float = 0.0
    duration: Latency = field(default_factory=Latency)
    header: Latency = field(default_factory=Latency)
    bytes_sent: int = 0
    bytes_received: int = 0
    retries: int = 0
    next: int = 0
    _ms: array[float] = field(default_factory=lambda: array("d"))
    _hdr: array[float] = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class WireStats:
    """The connections beneath the requests (socket filter), each counted once."""

    connections: int = 0
    tls: int = 0
    resumed: int = 0
    resets: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    ciphers: dict[str, int] = field(default_factory=dict)
    sni: dict[str, int] = field(default_factory=dict)
    alpn: dict[str, int] = field(default_factory=dict)
    no_request: dict[str, int] = field(default_factory=dict)
    """Connections that ended before a request, by outcome."""
    failures: dict[str, int] = field(default_factory=dict)
    """Failed TLS handshakes by reason."""
    handshake: Latency = field(default_factory=Latency)
    connect: Latency = field(default_factory=Latency)
    _hs: array[float] = field(default_factory=lambda: array("d"))
    _ct: array[float] = field(default_factory=lambda: array("d"))
    _seen: set[str] = field(default_factory=set)

    def feed(self, ex: Exchange) -> None:
        if ex.conn_start is None and ex.tls_version is None and ex.conn_outcome is None:
            return
        if ex.conn_outcome is None:
            key = ex.conn_id or f"{ex.client}>{ex.server}@{ex.conn_start}"
            if key in self._seen:
                return
            self._seen.add(key)
        self.connections += 1
        self.resets += ex.reset_by is not None
        if ex.tcp_connect_ms is not None:
            self._ct.append(ex.tcp_connect_ms)
        if ex.conn_outcome is not None:
            self.no_request[ex.conn_outcome] = self.no_request.get(ex.conn_outcome, 0) + 1
            if ex.conn_outcome == "tls-failed":
                reason = (ex.error or "").removeprefix("TLS handshake failed: ") or "unknown"
                self.failures[reason] = self.failures.get(reason, 0) + 1
        if ex.tls_version is None:
            return
        self.tls += 1
        self.resumed += bool(ex.tls_resumed)
        for table, key in ((self.versions, ex.tls_version), (self.ciphers, ex.tls_cipher or "?"),
                           (self.sni, ex.sni or "(none)"), (self.alpn, ex.alpn or "(none)")):
            table[key] = table.get(key, 0) + 1
        if ex.tls_handshake_ms is not None:
            self._hs.append(ex.tls_handshake_ms)

    def finish(self) -> None:
        self.handshake = Latency.of(self._hs)
        self.connect = Latency.of(self._ct)


@dataclass(slots=True)
class Summary:
    requests: int = 0
    first: float | None = None
    """Unix time of the first request start."""
    last: float | None = None
    """Unix time of the last response end."""
    duration_s: float = 0.0
    rate: float = 0.0
    """Requests per second over the session's duration."""
    classes: dict[str, int] = field(default_factory=_classes)
    latency: Latency = field(default_factory=Latency)
    errors: int = 0
    """Exchanges with a capture or decode problem (summary-only ones are not counted here)."""
    summary_only: int = 0
    """Exchanges counted from the kernel summary without payload (shed or sampled out)."""
    counted: int = 0
    """Requests counted in the kernel and not rows (sampled out, no keep rule: the stats
    record's `counted`); included in requests, status classes, bytes, workers, peers and
    latency (percentiles then exact to the histogram bucket, < 0.8 %)."""
    truncated: int = 0
    tls: int = 0
    tcp: int = 0
    """TCP proxy sessions (stream module) among the requests."""
    request_bytes: int = 0
    response_bytes: int = 0
    top_by_count: list[PathRow] = field(default_factory=list)
    top_by_time: list[PathRow] = field(default_factory=list)
    workers: list[WorkerStats] = field(default_factory=list)
    peers: list[PeerStats] = field(default_factory=list)
    locations: list[GroupStats] = field(default_factory=list)
    """Per server block > location of the HTTP exchanges, most requests first."""
    routes: list[GroupStats] = field(default_factory=list)
    """Per route template (`store.routes`) of the HTTP exchanges, most requests first (top N)."""
    wire: WireStats = field(default_factory=WireStats)
    """TCP/TLS facts of the connections (socket filter); connection records that never became
    a request are counted here only, not as requests."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`ngxscope stats --json`)."""
        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if not k.startswith("_")}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return obj

        return clean(asdict(self))


def summarize(exchanges: Iterable[Exchange], top: int = 10, templater: RouteTemplater | None = None,
              counted: Counted | None = None) -> Summary:
    """The figures of a stream of exchanges (any order); routes by `templater` (the heuristic
    alone when None); `counted`: the requests the kernel counted instead (store.kcounted)."""
    templater = templater or RouteTemplater()
    routes: dict[str, GroupStats] = {}
    s = Summary()
    all_ms: array[float] = array("d")
    paths: dict[str, list[float]] = {}
    workers: dict[int, WorkerStats] = {}
    peers: dict[str, PeerStats] = {}
    locations: dict[str, GroupStats] = {}
    for ex in exchanges:
        s.wire.feed(ex)
        if ex.conn_outcome is not None:
            continue
        ms = ex.duration_ms
        s.requests += 1
        s.first = ex.start if s.first is None else min(s.first, ex.start)
        s.last = ex.end if s.last is None else max(s.last, ex.end)
        cls = _class(ex.status)
        s.classes[cls] += 1
        all_ms.append(ms)
        s.summary_only += ex.summary_only
        problem = ex.error is not None  # a summary-only exchange is none (Exchange.summary_only)
        s.errors += problem
        s.truncated += ex.truncated
        s.tls += ex.tls
        tcp = ex.is_tcp
        s.tcp += tcp
        s.request_bytes += ex.request_bytes
        s.response_bytes += ex.response_bytes
        row = paths.setdefault(f"TCP {ex.server}" if tcp else ex.path, [0, 0.0])
        row[0] += 1
        row[1] += ms
        if not tcp and (ex.server_block or ex.location):
            key = location_key(ex)
            g = locations.get(key)
            if g is None:
                g = locations[key] = GroupStats(key)
            g.add(ex)
        if not tcp and ex.target:
            t = templater.template(ex.path)
            r = routes.get(t)
            if r is None:
                r = routes[t] = GroupStats(t)
            r.add(ex)
        w = workers.get(ex.pid)
        if w is None:
            w = workers[ex.pid] = WorkerStats(ex.pid)
        w.requests += 1
        w.classes[cls] += 1
        w.errors += problem
        w._ms.append(ms)
        for i, a in enumerate(ex.upstream):
            p = peers.get(a.addr)
            if p is None:
                p = peers[a.addr] = PeerStats(a.addr)
            p.requests += 1
            p.classes[_class(a.status)] += 1
            p.errors += (a.connect_ms is None) if tcp else (a.status is None or a.status >= 500)
            p.bytes_sent += a.request_bytes
            p.bytes_received += a.response_bytes
            p.retries += i > 0
            p.next += i < len(ex.upstream) - 1
            if a.duration_ms is not None:
                p._ms.append(a.duration_ms)
            if a.header_ms is not None:
                p._hdr.append(a.header_ms)
    if counted is not None and counted.total.requests:
        _add_counted(s, counted, workers, peers)
    if s.first is not None and s.last is not None:
        s.duration_s = max(0.0, s.last - s.first)
        s.rate = s.requests / s.duration_s if s.duration_s > 0 else 0.0
    s.latency = _latency(all_ms, counted.total if counted is not None else None)
    rows = [PathRow(k, int(v[0]), round(v[1], 3), round(v[1] / v[0], 3)) for k, v in paths.items()]
    s.top_by_count = sorted(rows, key=lambda r: (-r.requests, -r.total_ms, r.path))[:top]
    s.top_by_time = sorted(rows, key=lambda r: (-r.total_ms, -r.requests, r.path))[:top]
    for w in workers.values():
        w.latency = _latency(w._ms, counted.workers.get(w.pid) if counted is not None else None)
    s.workers = [workers[k] for k in sorted(workers)]
    for p in peers.values():
        p.duration = _latency(p._ms, counted.peers.get(p.addr) if counted is not None else None)
        p.header = Latency.of(p._hdr)
        p.error_rate = p.errors / p.requests if p.requests else 0.0
    s.peers = [peers[k] for k in sorted(peers)]
    for g in locations.values():
        g.finish()
    s.locations = sorted(locations.values(), key=lambda g: (-g.requests, g.key))
    for g in routes.values():
        g.finish()
    s.routes = sorted(routes.values(), key=lambda g: (-g.requests, g.key))[:top]
    s.wire.finish()
    return s


def _latency(values: array[float], group: CountedGroup | None) -> Latency:
    """Exact percentiles of `values`, or, with requests counted in the kernel, percentiles
    of both exact to the histogram's bucket."""
    if group is None or not group.hist.total:
        return Latency.of(values)
    p50, p95, p99 = merged_percentiles(values, group.hist)
    top = int(max(range(len(group.hist.counts)), key=lambda i: i if group.hist.counts[i] else -1))
    high = group.hist.bucket_ms(top)[1]
    return Latency(p50, p95, p99, max(max(values, default=0.0), high))


def _add_counted(s: Summary, counted: Counted, workers: dict[int, WorkerStats],
                 peers: dict[str, PeerStats]) -> None:
    t = counted.total
    s.counted = t.requests
    s.requests += t.requests
    for cls, n in t.classes.items():
        s.classes[cls] += n
    s.request_bytes += t.request_bytes
    s.response_bytes += t.response_bytes
    for pid, g in counted.workers.items():
        w = workers.get(pid)
        if w is None:
            w = workers[pid] = WorkerStats(pid)
        w.requests += g.requests
        for cls, n in g.classes.items():
            w.classes[cls] += n
    for addr, g in counted.peers.items():
        p = peers.get(addr)
        if p is None:
            p = peers[addr] = PeerStats(addr)
        p.requests += g.requests
        for cls, n in g.classes.items():
            p.classes[cls] += n
        p.errors += g.errors


# --- text ----------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.2f}"
    if v < 1000:
        return f"{v:.1f}"
    return f"{v:.0f}"


def _bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024.0
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TiB"


def _table(title: str, heads: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A plain aligned table; the first `left` columns are left-aligned, the rest right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if i < left else c.rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return ["", title, line(heads), line(["-" * w for w in widths]), *map(line, rows)]


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_summary(s: Summary, name: str = "") -> str:
    """The text report `ngxscope stats` prints."""
    from ngxscope.store.export_har import iso_time

    out = [f"session   {name}" if name else "session"]
    if s.requests == 0:
        return "\n".join([*out, "requests  0"]) + "\n"
    pct = lambda n: f"{100.0 * n / s.requests:.1f}%"  # noqa: E731
    lat = s.latency
    out += [
        f"span      {iso_time(s.first or 0.0)} .. {iso_time(s.last or 0.0)}"
        f"  ({s.duration_s:.3f} s)",
        f"requests  {s.requests}   {s.rate:.1f} req/s   tls {s.tls}   errors {s.errors}"
        f"   truncated {s.truncated}" + (f"   tcp sessions {s.tcp}" if s.tcp else "")
        + (f"   summary-only {s.summary_only}" if s.summary_only else "")
        + (f"   ({s.counted} counted in the kernel, not rows: sampled out, no keep rule)" if s.counted else ""),
        f"bytes     in {_bytes(s.request_bytes)}   out {_bytes(s.response_bytes)}",
        "status    " + "   ".join(f"{c} {n} ({pct(n)})" for c, n in s.classes.items() if n),
        f"latency   p50 {_ms(lat.p50)} ms   p95 {_ms(lat.p95)} ms   p99 {_ms(lat.p99)} ms"
        f"   max {_ms(lat.max)} ms",
    ]
    path_heads = ["path", "requests", "total ms", "mean ms"]
    out += _table("top paths by requests", path_heads, [
        [_clip(r.path), str(r.requests), _ms(r.total_ms), _ms(r.mean_ms)] for r in s.top_by_count])
    out += _table("top paths by total time", path_heads, [
        [_clip(r.path), str(r.requests), _ms(r.total_ms), _ms(r.mean_ms)] for r in s.top_by_time])
    out += _table(
        "workers",
        ["pid", "requests", "share", "2xx", "3xx", "4xx", "5xx", "none", "p50 ms", "p95 ms",
         "p99 ms", "max ms"],
        [[str(w.pid), str(w.requests), pct(w.requests), *(str(w.classes[c]) for c in CLASSES[1:]),
          _ms(w.latency.p50), _ms(w.latency.p95), _ms(w.latency.p99), _ms(w.latency.max)]
         for w in s.workers],
    )
    if s.locations:
        out += _table(
            "locations (server block \u203a location)",
            ["location", "requests", "share", "err %", "p50 ms", "p95 ms", "p99 ms", "sent", "answered by nginx"],
            [[_clip(g.key), str(g.requests), pct(g.requests), f"{100.0 * g.error_rate:.1f}",
              _ms(g.latency.p50), _ms(g.latency.p95), _ms(g.latency.p99), _bytes(g.response_bytes),
              ", ".join(f"{k} {v}" for k, v in sorted(g.answers.items())) or "-"]
             for g in s.locations],
        )
    if s.routes:
        out += _table(
            "routes (path templates)",
            ["route", "requests", "share", "err %", "p50 ms", "p95 ms", "p99 ms", "sent"],
            [[_clip(g.key), str(g.requests), pct(g.requests), f"{100.0 * g.error_rate:.1f}",
              _ms(g.latency.p50), _ms(g.latency.p95), _ms(g.latency.p99), _bytes(g.response_bytes)]
             for g in s.routes],
        )
    if s.peers:
        out += _table(
            "upstream peers",
            ["peer", "attempts", "2xx", "3xx", "4xx", "5xx", "none", "err %", "p50 ms",
             "p95 ms", "p99 ms", "hdr p50", "hdr p95", "hdr p99", "sent", "received",
             "retries", "next"],
            [[p.addr, str(p.requests), *(str(p.classes[c]) for c in CLASSES[1:]),
              f"{100.0 * p.error_rate:.1f}", _ms(p.duration.p50), _ms(p.duration.p95),
              _ms(p.duration.p99), _ms(p.header.p50), _ms(p.header.p95), _ms(p.header.p99),
              _bytes(p.bytes_sent), _bytes(p.bytes_received), str(p.retries), str(p.next)]
             for p in s.peers],
        )
    out += _wire_lines(s.wire)
    return "\n".join(out) + "\n"


def _top(counts: dict[str, int], n: int = 5) -> str:
    return "   ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _wire_lines(w: WireStats) -> list[str]:
    if not w.connections:
        return []
    resumed = f"{100.0 * w.resumed / w.tls:.1f}%" if w.tls else "-"
    out = ["", "connections (socket filter)",
           f"  {w.connections} seen   tls {w.tls}   resumed {w.resumed} ({resumed})   resets {w.resets}"
           + (f"   no request: {_top(w.no_request)}" if w.no_request else ""),
           f"  tcp connect   p50 {_ms(w.connect.p50)} ms   p95 {_ms(w.connect.p95)} ms   p99 {_ms(w.connect.p99)} ms",
           f"  tls handshake p50 {_ms(w.handshake.p50)} ms   p95 {_ms(w.handshake.p95)} ms"
           f"   p99 {_ms(w.handshake.p99)} ms"]
    for title, table in (("versions", w.versions), ("ciphers", w.ciphers), ("sni", w.sni),
                         ("alpn", w.alpn), ("failed handshakes", w.failures)):
        if table:
            out.append(f"  {title + ':':<18}{_top(table)}")
    return out
