"""Exchanges as OpenTelemetry traces over OTLP/HTTP (`record --otlp-endpoint URL`).

Each exchange becomes a SERVER span (its start and end are the exchange's: first request
byte read, last response byte written) with one CLIENT child span per upstream attempt,
with HTTP semantic-convention attributes. Spans go through the SDK's BatchSpanProcessor and
OTLP/HTTP protobuf exporter on the SDK's own thread.

Memory is bounded and the capture never waits: an exchange is admitted only while fewer
than `queue_size` spans are waiting for the exporter; otherwise its spans are dropped and
counted (an endpoint that is down or hangs costs a counter, never a blocked decode thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from ngxscope.decode.tracecontext import header_value, parse_traceparent, traceparent_of_head

from .. import __version__
from ..model import Exchange, LifecycleEvent, UpstreamAttempt
from .labels import method_label, split_addr

__all__ = ["SpanSink", "exchange_attributes", "incoming_context", "traces_url", "wire_attributes"]

log = logging.getLogger(__name__)


def traces_url(url: str) -> str:
    """The OTLP/HTTP traces URL: "/v1/traces" is added to a bare "http://host:4318"."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/traces")
    return urlunsplit(parts)


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)


def exchange_attributes(ex: Exchange, headers: Sequence[str] = ()) -> dict[str, Any]:
    """Semantic-convention attributes of the SERVER span of `ex`; `headers` (lower case)
    become `http.request.header.<name>` attributes (string arrays) when present."""
    path, _, query = ex.target.partition("?")
    local_ip, local_port = split_addr(ex.server)
    client_ip, client_port = split_addr(ex.client)
    host = ex.host.strip()
    host_name, host_port = split_addr(host) if host else (local_ip, None)
    attrs: dict[str, Any] = {
        "http.request.method": method_label(ex.method) if ex.method else "_OTHER",
        "url.path": path,
        "url.scheme": "https" if ex.tls else "http",
        "server.address": host_name or local_ip,
        "client.address": client_ip,
        "network.peer.address": client_ip,
        "network.local.address": local_ip,
        "http.request.body.size": ex.request_body_size,
        "http.response.body.size": ex.response_body_size,
        "http.request.size": ex.request_bytes,
        "http.response.size": ex.response_bytes,
        "nginx.worker.pid": ex.pid,
        "ngxscope.exchange.id": ex.id,
    }
    if ex.method and attrs["http.request.method"] != ex.method:
        attrs["http.request.method_original"] = ex.method
    if query:
        attrs["url.query"] = query
    port = local_port if host_port is None else host_port
    if port is not None:
        attrs["server.port"] = port
    if local_port is not None:
        attrs["network.local.port"] = local_port
    if client_port is not None:
        attrs["client.port"] = client_port
        attrs["network.peer.port"] = client_port
    if ex.version.startswith("HTTP/"):
        attrs["network.protocol.version"] = ex.version[5:]
    if ex.status is not None:
        attrs["http.response.status_code"] = ex.status
    if ex.server_block:
        attrs["nginx.server_block"] = ex.server_block
    if ex.location:
        attrs["http.route"] = ex.location  # the location block: nginx's own route
        attrs["nginx.location"] = ex.location
    if ex.error:
        attrs["error.type"] = "ngxscope.incomplete"
        attrs["ngxscope.error"] = ex.error
    elif ex.status is not None and ex.status >= 500:
        attrs["error.type"] = str(ex.status)
    for name in headers:
        values = [v for k, v in ex.request_headers if k.lower() == name]
        if values:
            attrs[f"http.request.header.{name}"] = values
    ua = next((v for k, v in ex.request_headers if k.lower() == "user-agent"), None)
    if ua:
        attrs["user_agent.original"] = ua
    attrs.update(wire_attributes(ex))
    return attrs


def wire_attributes(ex: Exchange) -> dict[str, Any]:
    """The connection beneath the request (socket filter): semantic-convention `tls.*`
    attributes, and ngxscope's own for TCP facts."""
    attrs: dict[str, Any] = {}
    if ex.tls_version:
        name, _, number = ex.tls_version.partition("v")
        attrs["tls.protocol.name"] = name.lower()
        attrs["tls.protocol.version"] = number
    if ex.tls_cipher:
        attrs["tls.cipher"] = ex.tls_cipher
    if ex.sni:
        attrs["tls.client.server_name"] = ex.sni
    if ex.alpn:
        attrs["tls.next_protocol"] = ex.alpn
    if ex.tls_resumed is not None:
        attrs["tls.resumed"] = ex.tls_resumed
    for key, value in (("ngxscope.tcp.connect_ms", ex.tcp_connect_ms),
                       ("ngxscope.tls.handshake_ms", ex.tls_handshake_ms),
                       ("ngxscope.tcp.retransmits", ex.retransmits),
                       ("ngxscope.tcp.reset_by", ex.reset_by),
                       ("ngxscope.connection.outcome", ex.conn_outcome)):
        if value is not None:
            attrs[key] = value
    return attrs


def incoming_context(ex: Exchange) -> Context:
    """The caller's trace when the request carried a valid `traceparent` (and `tracestate`):
    the server span becomes its child, so a trace continues through nginx. Marked sampled
    whatever the caller's flag: ngxscope records every request it sees."""
    tp = parse_traceparent(header_value(ex.request_headers, "traceparent") or "")
    if tp is None:
        return Context()
    state = header_value(ex.request_headers, "tracestate")
    sc = SpanContext(int(tp.trace_id, 16), int(tp.parent_id, 16), is_remote=True,
                     trace_flags=TraceFlags(TraceFlags.SAMPLED),
                     trace_state=TraceState.from_header([state]) if state else None)
    return trace.set_span_in_context(NonRecordingSpan(sc), Context())


def attempt_attributes(ex: Exchange, att: UpstreamAttempt, index: int) -> dict[str, Any]:
    """Attributes of the CLIENT span of one upstream attempt."""
    ip, port = split_addr(att.addr)
    attrs: dict[str, Any] = {
        "http.request.method": method_label(ex.method) if ex.method else "_OTHER",
        "server.address": ip,
        "network.peer.address": ip,
        "nginx.upstream.attempt": index,
        "nginx.upstream.reused": att.reused,
        "http.request.size": att.request_bytes,
        "http.response.size": att.response_bytes,
    }
    if port is not None:
        attrs["server.port"] = port
        attrs["network.peer.port"] = port
    if att.group:
        attrs["nginx.upstream.group"] = att.group
    if att.status is not None:
        attrs["http.response.status_code"] = att.status
        if att.status >= 400:
            attrs["error.type"] = str(att.status)
    else:
        attrs["error.type"] = "no_response"
    for key, value in (("nginx.upstream.connect_ms", att.connect_ms),
                       ("nginx.upstream.header_ms", att.header_ms),
                       ("nginx.upstream.response_ms", att.duration_ms)):
        if value is not None:
            attrs[key] = float(value)
    sent = traceparent_of_head(att.request_head)
    if sent:  # what the upstream's own tracing continues from
        attrs["http.request.header.traceparent"] = [sent]
    return attrs


class _CountingExporter(SpanExporter):
    """Wraps the OTLP exporter: counts what it was handed, exported and failed to export."""

    def __init__(self, inner: SpanExporter, url: str) -> None:
        self.inner = inner
        self.url = url
        self.received = 0
        self.exported = 0
        self.failed = 0
        self._last_warning = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.received += len(spans)
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            log.debug("OTLP export raised: %s", exc)
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
            now = time.monotonic()
            if now - self._last_warning > 30.0:
                self._last_warning = now
                log.warning("OTLP export to %s failed: %d spans dropped so far", self.url, self.failed)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SpanSink:
    """A recorder sink exporting each exchange (and its upstream attempts) as spans."""

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str = "nginx",
        queue_size: int = 2048,
        batch_size: int = 512,
        schedule_delay_ms: int = 1000,
        timeout_s: float = 5.0,
        request_headers: Sequence[str] = (),
        exporter: SpanExporter | None = None,
    ) -> None:
        self.url = traces_url(endpoint)
        self.request_headers = tuple(h.strip().lower() for h in request_headers if h.strip())
        self.queue_size = max(1, queue_size)
        self.timeout_s = timeout_s
        # the exporter logs every failed batch with a traceback: we report failures ourselves
        logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)
        inner = exporter or OTLPSpanExporter(endpoint=self.url, timeout=timeout_s)
        self.exporter = _CountingExporter(inner, self.url)
        resource = Resource.create({
            "service.name": service_name,
            "host.name": os.uname().nodename,
            "telemetry.distro.name": "ngxscope",
            "telemetry.distro.version": __version__,
        })
        self.provider = TracerProvider(resource=resource)
        self.processor = BatchSpanProcessor(
            self.exporter,
            max_queue_size=self.queue_size,
            max_export_batch_size=min(batch_size, self.queue_size),
            schedule_delay_millis=schedule_delay_ms,
            export_timeout_millis=int(timeout_s * 1000),
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("ngxscope", __version__)
        self.admitted = 0
        self.dropped = 0
        self._failures = 0
        self._closed = False
        self._lock = threading.Lock()

    # -- sink protocol ---------------------------------------------------------------
    def write_exchange(self, ex: Exchange) -> None:
        n = 1 + len(ex.upstream)
        with self._lock:
            if self._closed or self.admitted - self.exporter.received + n > self.queue_size:
                self.dropped += n
                return
            self.admitted += n
        try:
            self._emit(ex)
        except Exception as exc:  # tracing never takes the capture down
            self._failures += 1
            if self._failures <= 3:
                log.warning("otlp: cannot export exchange %s: %s", ex.id, exc)

    def write_event(self, ev: LifecycleEvent) -> None:
        pass

    def write_stats(self, d: dict[str, Any]) -> None:
        pass

    def close(self, clean: bool = True) -> None:
        """Export what is queued (bounded by the export timeout), then stop the SDK thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        t = threading.Thread(target=self.provider.shutdown, name="ngxscope-otlp-shutdown", daemon=True)
        t.start()
        t.join(self.timeout_s + 2.0)
        if t.is_alive():
            log.warning("OTLP exporter did not finish within %.0f s; %d spans not sent",
                        self.timeout_s + 2.0, self.pending() + self.in_flight())

    def pending(self) -> int:
        """Spans queued for the exporter (not yet handed to it)."""
        return max(0, self.admitted - self.exporter.received)

    def in_flight(self) -> int:
        """Spans in an export request that has not finished."""
        e = self.exporter
        return max(0, e.received - e.exported - e.failed)

    def counters(self) -> dict[str, int]:
        """Spans admitted, exported, failed (endpoint errors) and dropped (queue full)."""
        e = self.exporter
        return {"admitted": self.admitted, "exported": e.exported, "failed": e.failed,
                "dropped": self.dropped, "pending": self.pending(), "in_flight": self.in_flight()}

    def summary(self) -> str:
        c = self.counters()
        unsent = c["pending"] + c["in_flight"]
        return (f"OTLP {self.url}: {c['exported']} spans exported, {c['failed']} failed, "
                f"{c['dropped']} dropped (queue full)" + (f", {unsent} unsent at exit" if unsent else ""))

    # -- spans -----------------------------------------------------------------------
    def _emit(self, ex: Exchange) -> None:
        name = ex.method or "HTTP"
        if ex.location:
            name = f"{name} {ex.location}"  # "{method} {http.route}", as the conventions name it
        start, end = _ns(ex.start), _ns(max(ex.end, ex.start))
        server = self.tracer.start_span(name, context=incoming_context(ex), kind=SpanKind.SERVER,
                                        start_time=start, attributes=exchange_attributes(ex, self.request_headers))
        if ex.error or (ex.status is not None and ex.status >= 500):
            server.set_status(Status(StatusCode.ERROR, ex.error or None))
        parent = trace.set_span_in_context(server)
        for i, att in enumerate(ex.upstream):
            a_start = _ns(att.start) if att.start else start
            a_start = min(max(a_start, start), end)
            a_end = a_start + int((att.duration_ms or 0.0) * 1_000_000) if att.duration_ms is not None else end
            a_end = min(max(a_end, a_start), end)
            span_name = f"{name} {att.group}" if att.group else name
            child = self.tracer.start_span(span_name, context=parent, kind=SpanKind.CLIENT,
                                           start_time=a_start, attributes=attempt_attributes(ex, att, i))
            if att.status is None or att.status >= 400:
                child.set_status(Status(StatusCode.ERROR))
            child.end(end_time=a_end)
        server.end(end_time=end)
