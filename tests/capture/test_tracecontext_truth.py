"""Trace context against nginx's own word: the traceparent each request arrived with is
nginx's `$http_traceparent` in its access log, and the traceparent nginx sent upstream is
the `$http_traceparent` its upstream logged (here a second server of the same nginx, one
location forwarding the header as it came, one replacing it with proxy_set_header). The
OTLP spans made from the capture: the server span is the child of the incoming span, each
client span carries exactly what nginx sent (real nginx, real eBPF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic
from ngxscope.telemetry.otlp import SpanSink

pytestmark = pytest.mark.capture

REPLACED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _conf(p: Path, port: int, inner: int) -> str:
    fmt = '{"lab_id":"$http_x_lab","uri":"$request_uri","traceparent":"$http_traceparent","server":"$server_name"}'
    return f"""
    log_format tplog escape=json '{fmt}';
    server {{
        listen 127.0.0.1:{inner};
        server_name inner.test;
        access_log {p}/logs/inner.log tplog;
        location / {{ return 200 "inner"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name outer.test;
        access_log {p}/logs/outer.log tplog;
        location /fwd/ {{ proxy_pass http://127.0.0.1:{inner}/; }}
        location /set/ {{ proxy_pass http://127.0.0.1:{inner}/; proxy_set_header traceparent "{REPLACED}"; }}
        location = /here {{ return 200 "here"; }}
    }}
"""


def test_spans_carry_nginx_s_traceparents(tmp_path: Path, capture_factory: Any) -> None:
    port, inner = free_port(), free_port()
    nginx = LabNginx(workers=1, prefix=tmp_path, extra_http=_conf(tmp_path, port, inner))
    nginx.start()
    try:
        cap = capture_factory(pid=nginx.master_pid)
        traffic = Traffic(port, nginx.tls_port)
        n = 0
        for i in range(4):
            for path in ("/fwd/a", "/set/b", "/here"):
                tp = f"00-{i + 1:032x}-{0xab00 + i:016x}-0{i % 2}"
                traffic.request(False, "GET", path, headers=[("traceparent", tp)] if i < 3 else [])
                n += 1
        traffic.request(False, "GET", "/fwd/c", headers=[("traceparent", "00-zz-not-valid")])
        n += 1
        outer = nginx.wait_log_lines(n, path=tmp_path / "logs" / "outer.log")
        inner_log = nginx.wait_log_lines(9, path=tmp_path / "logs" / "inner.log")
        exchanges = cap.wait_for(n + 9)
        cap.stop()
    finally:
        nginx.stop()
    mine = {dict(ex.request_headers).get("X-Lab"): ex for ex in exchanges if ex.server_block == "outer.test"}
    exporter = InMemorySpanExporter()
    sink = SpanSink("http://127.0.0.1:9", exporter=exporter, schedule_delay_ms=50, request_headers=["X-Lab"])
    for ex in mine.values():
        sink.write_exchange(ex)
    sink.close()
    spans = exporter.get_finished_spans()
    servers = {s.attributes["http.request.header.x-lab"][0]: s for s in spans if s.kind == SpanKind.SERVER}
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(servers) == n and len(clients) == 9
    sent_upstream = {line["lab_id"]: line["traceparent"] for line in inner_log}
    problems = []
    for line in outer:
        server = servers[line["lab_id"]]
        incoming = line["traceparent"]
        valid = incoming.startswith("00-0")
        if valid:
            _v, trace_id, parent, _f = incoming.split("-")
            if f"{server.context.trace_id:032x}" != trace_id or server.parent is None \
                    or f"{server.parent.span_id:016x}" != parent:
                problems.append(f"{line['uri']}: server span not the child of $http_traceparent {incoming}")
        elif server.parent is not None:
            problems.append(f"{line['uri']}: arrived with {incoming!r}, yet its span has a parent")
        kids = [c for c in clients if c.parent is not None and c.parent.span_id == server.context.span_id]
        if line["lab_id"] in sent_upstream:
            want = sent_upstream[line["lab_id"]]
            got = [c.attributes.get("http.request.header.traceparent", ("",))[0] for c in kids]
            if got != ([want] if want else [""]):
                problems.append(f"{line['uri']}: client span carries {got}, nginx sent upstream {want!r}")
        elif kids:
            problems.append(f"{line['uri']}: client spans without an upstream request")
    print(f"\n{len(outer)} requests, {len(inner_log)} sent upstream: {len(problems)} mismatches")
    assert not problems, "\n".join(problems)
    assert sum(1 for v in sent_upstream.values() if v == REPLACED) == 4  # proxy_set_header's, as nginx sent it
