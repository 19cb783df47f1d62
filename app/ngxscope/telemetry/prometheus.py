"""RED metrics of the captured exchanges, served for Prometheus (`record --metrics-listen`).

Uses the official `prometheus_client` with a private registry (only ngxscope's series; no
process or GC collectors of the recorder itself, which would be mistaken for nginx's).
Labels are bounded: worker pid, server block, upstream group and peer come from nginx's
configuration and processes, status is a class ("2xx"), the method is a standard one or
"_OTHER"; a path never becomes a label.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from ..capture.kcounts import hist_bucket_low
from ..model import Exchange, LifecycleEvent
from .labels import BoundedLabel, method_label, split_addr, status_class

__all__ = ["DURATION_BUCKETS", "MetricsSink", "parse_listen"]

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: from sub-millisecond cache hits to a minute-long upstream (nginx's usual range)."""

SERVER_LABELS = ("worker", "server_block", "location", "method", "status_class")
UPSTREAM_LABELS = ("worker", "server_block", "group", "peer", "status_class")


_TLS_VERSIONS = frozenset(("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"))


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:9464" / ":9464" / "[::1]:9464" / "9464" -> (address, port); ValueError if bad."""
    text = text.strip()
    if text.isdigit():
        host, port = "0.0.0.0", int(text)
    else:
        host, port_opt = split_addr(text)
        if port_opt is None:
            raise ValueError(f"not ADDR:PORT: {text!r}")
        host, port = host or "0.0.0.0", port_opt
    if not 0 <= port < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, port


class MetricsSink:
    """A recorder sink that updates metrics per exchange and serves them over HTTP.

    `write_exchange` runs on the decode thread: it only updates in-memory counters (a few
    microseconds) and never raises into the capture.
    """

    def __init__(self, listen: str | None = None, *, label_limit: int = 200) -> None:
        disable_created_metrics()  # no `_created` series: half the scrape, no use for RED
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ngxscope_http_requests", "HTTP requests nginx handled (captured)",
                                SERVER_LABELS, registry=r)
        self.duration = Histogram("ngxscope_http_request_duration_seconds",
                                  "Time from the first request byte read to the last response byte written",
                                  ("worker", "server_block", "location", "status_class"), buckets=DURATION_BUCKETS,
                                  registry=r)
        self.request_bytes = Counter("ngxscope_http_request_size_bytes",
                                     "Request bytes nginx read: line, headers and body ($request_length)",
                                     ("worker", "server_block"), registry=r)
        self.response_bytes = Counter("ngxscope_http_response_size_bytes",
                                      "Response bytes nginx wrote: headers and body ($bytes_sent)",
                                      ("worker", "server_block"), registry=r)
        self.incomplete = Counter("ngxscope_http_incomplete_exchanges",
                                  "Exchanges captured incomplete or malformed (lost events, no response)",
                                  ("worker", "server_block"), registry=r)
        self.attempts = Counter("ngxscope_upstream_attempts", "Upstream attempts (retries included)",
                                UPSTREAM_LABELS, registry=r)
        self.attempt_duration = Histogram("ngxscope_upstream_attempt_duration_seconds",
                                          "Upstream attempt time until the response was read ($upstream_response_time)",
                                          ("server_block", "group", "peer"), buckets=DURATION_BUCKETS,
                                          registry=r)
        self.attempt_connect = Histogram("ngxscope_upstream_connect_duration_seconds",
                                         "Upstream connect time ($upstream_connect_time; 0 when reused)",
                                         ("group", "peer"), buckets=DURATION_BUCKETS, registry=r)
        self.lost = Gauge("ngxscope_capture_lost_events", "BPF events lost since the capture started",
                          registry=r)
        self.truncated = Gauge("ngxscope_capture_truncated_payloads",
                               "Payloads cut to the capture cap since the capture started", registry=r)
        self.workers = Gauge("ngxscope_capture_workers", "nginx workers being captured", registry=r)
        self.up = Gauge("ngxscope_capture_up", "1 while the capture is attached", registry=r)
        self.events = Counter("ngxscope_lifecycle_events", "Lifecycle events (reloads, worker exits...)",
                              ("kind",), registry=r)
        self.tls_handshakes = Counter("ngxscope_tls_handshakes",
                                      "TLS handshakes seen by the socket filter (one per connection)",
                                      ("server_block", "version", "resumed"), registry=r)
        self.tls_handshake = Histogram("ngxscope_tls_handshake_duration_seconds",
                                       "TLS handshake time: ClientHello to the client's last handshake flight",
                                       ("version",), buckets=DURATION_BUCKETS, registry=r)
        self.tcp_connect = Histogram("ngxscope_tcp_connect_duration_seconds",
                                     "Client TCP handshake time: SYN to the client's ACK", (),
                                     buckets=DURATION_BUCKETS, registry=r)
        self.no_request = Counter("ngxscope_connections_without_request",
                                  "Client connections that ended before a request (failed TLS handshake, "
                                  "reset, closed)", ("outcome", "reason"), registry=r)
        self._bound = {name: BoundedLabel(label_limit) for name in ("worker", "server_block", "location", "group", "peer")}
        self._bound["reason"] = BoundedLabel(40)
        self._failures = 0
        self._counted_seen: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self._lock = threading.Lock()
        self.server: Any = None
        self.address: tuple[str, int] | None = None
        if listen is not None:
            host, port = parse_listen(listen)
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
            self.address = (host, int(self.server.server_address[1]))

    # -- sink protocol ---------------------------------------------------------------
    def write_exchange(self, ex: Exchange) -> None:
        try:
            self._observe(ex)
        except Exception as exc:  # metrics never take the capture down
            self._failures += 1
            if self._failures <= 3:
                log.warning("metrics: cannot account exchange %s: %s", ex.id, exc)

    def write_event(self, ev: LifecycleEvent) -> None:
        kind = ev.kind if ev.kind.replace("-", "").isalnum() and len(ev.kind) < 32 else "other"
        self.events.labels(kind=kind).inc()
        if ev.kind == "attach":
            self.up.set(1)
        elif ev.kind == "detach":
            self.up.set(0)

    def write_stats(self, d: dict[str, Any]) -> None:
        self.lost.set(float(d.get("lost", 0) or 0))
        self.truncated.set(float(d.get("truncated", 0) or 0))
        self.workers.set(float(len(d.get("workers", []) or [])))
        counted = d.get("counted")
        if isinstance(counted, dict):
            try:
                self._observe_counted(counted)
            except Exception as exc:  # metrics never take the capture down
                self._failures += 1
                if self._failures <= 3:
                    log.warning("metrics: cannot account the kernel's counts: %s", exc)

    def _observe_counted(self, counted: dict[str, Any]) -> None:
        """The requests counted in the kernel (sampled out, no keep rule: not rows) join the
        same series, with location "(counted)" and method "_OTHER" (the kernel keeps neither).
        The stats record's counts are cumulative: what is new since the last one is added."""
        b = self._bound
        for row in counted.get("rows") or ():
            key = ("r", row["pid"], row["server"], row.get("peer"), row["status"])
            seen = self._counted_seen.get(key, (0, 0, 0))
            n, req, sent = int(row["n"]), int(row["request_length"]), int(row["bytes_sent"])
            self._counted_seen[key] = (n, req, sent)
            if n <= seen[0]:
                continue
            worker, block = b["worker"](str(row["pid"])), b["server_block"](row["server"] or "unknown")
            cls = status_class(int(row["status"]))
            self.requests.labels(worker, block, b["location"]("(counted)"), "_OTHER", cls).inc(n - seen[0])
            self.request_bytes.labels(worker, block).inc(max(0, req - seen[1]))
            self.response_bytes.labels(worker, block).inc(max(0, sent - seen[2]))
        for entry in counted.get("hist") or ():
            if entry.get("which") != "request":
                continue
            worker, block = b["worker"](str(entry["pid"])), b["server_block"](entry["server"] or "unknown")
            cls = f"{entry['class']}xx" if 1 <= int(entry["class"]) <= 5 else "none"
            child = self.duration.labels(worker, block, b["location"]("(counted)"), cls)
            for bucket, n in entry["buckets"].items():
                hkey: tuple[Any, ...] = ("h", entry["pid"], entry["server"], entry.get("peer"), entry["class"], bucket)
                new = int(n) - self._counted_seen.get(hkey, (0,))[0]
                self._counted_seen[hkey] = (int(n),)
                if new > 0:
                    _observe_many(child, hist_bucket_low(int(bucket)) / 1e6, new)

    def close(self, clean: bool = True) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- internals -------------------------------------------------------------------
    def _observe_wire(self, ex: Exchange) -> bool:
        """Connection metrics; True for a connection record (no HTTP metrics then)."""
        if ex.conn_outcome is not None:
            reason = (ex.error or "").rpartition(": ")[2] if ex.conn_outcome == "tls-failed" else ""
            self.no_request.labels(ex.conn_outcome, self._bound["reason"](reason or "none")).inc()
        if ex.conn_seq == 0 or ex.conn_outcome is not None:
            if ex.tcp_connect_ms is not None:
                self.tcp_connect.observe(ex.tcp_connect_ms / 1000.0)
            if ex.tls_version:
                version = ex.tls_version if ex.tls_version in _TLS_VERSIONS else "other"
                block = self._bound["server_block"](ex.server_block or "unknown")
                self.tls_handshakes.labels(block, version, "true" if ex.tls_resumed else "false").inc()
                if ex.tls_handshake_ms is not None:
                    self.tls_handshake.labels(version).observe(ex.tls_handshake_ms / 1000.0)
        return ex.conn_outcome is not None

    def _observe(self, ex: Exchange) -> None:
        if self._observe_wire(ex):
            return
        b = self._bound
        worker = b["worker"](str(ex.pid))
        block = b["server_block"](ex.server_block or "unknown")
        # bounded like every label: past the limit, new locations count as "other"
        location = b["location"](ex.location or "unknown")
        cls = status_class(ex.status)
        self.requests.labels(worker, block, location, method_label(ex.method), cls).inc()
        self.duration.labels(worker, block, location, cls).observe(ex.duration_ms / 1000.0)
        self.request_bytes.labels(worker, block).inc(max(0, ex.request_bytes))
        self.response_bytes.labels(worker, block).inc(max(0, ex.response_bytes))
        if ex.error:
            self.incomplete.labels(worker, block).inc()
        for att in ex.upstream:
            group = b["group"](att.group or "unknown")
            peer = b["peer"](att.addr or "unknown")
            self.attempts.labels(worker, block, group, peer, status_class(att.status)).inc()
            if att.duration_ms is not None:
                self.attempt_duration.labels(block, group, peer).observe(att.duration_ms / 1000.0)
            if att.connect_ms is not None:
                self.attempt_connect.labels(group, peer).observe(att.connect_ms / 1000.0)

    def url(self) -> str:
        """http://ADDR:PORT/metrics of the running server."""
        assert self.address is not None
        host, port = self.address
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"


def _observe_many(child: Any, seconds: float, n: int) -> None:
    """`n` observations of `seconds` in a prometheus_client histogram child at once (its
    per-bucket values, as observe() updates them), or one by one if their shape changed."""
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    bounds = getattr(child, "_upper_bounds", None)
    if buckets is None or total is None or bounds is None:
        for _ in range(n):
            child.observe(seconds)
        return
    total.inc(seconds * n)
    for i, bound in enumerate(bounds):
        if seconds <= bound:
            buckets[i].inc(n)
            break
