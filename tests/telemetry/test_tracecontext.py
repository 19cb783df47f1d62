"""Trace context through nginx (real nginx, real eBPF, real OTLP payload): a request that
arrives with `traceparent` gets a server span that is the child of the caller's span, in
its trace; each upstream attempt's client span carries the traceparent nginx forwarded."""

from __future__ import annotations

import time
from typing import Any

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic

from .conftest import OtlpReceiver, attrs

SERVER, CLIENT = 2, 3


def test_server_spans_continue_the_callers_trace(lab_nginx: LabNginx, record_proc: Any,
                                                 otlp_receiver: OtlpReceiver) -> None:
    rec = record_proc("--pid", str(lab_nginx.master_pid), "--otlp-endpoint", otlp_receiver.url,
                      "--otlp-header", "X-Lab")
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent: dict[str, str] = {}
    for i in range(12):
        tp = f"00-{i + 1:032x}-{0xabc0 + i:016x}-0{i % 2}"  # sampled and not: every one recorded
        path = "/api/echo" if i % 3 else "/health"
        traffic.request(bool(i % 2), "GET", path, headers=[("traceparent", tp)])
        sent[traffic.records[-1].lab_id] = tp
    traffic.request(False, "GET", "/api/echo")  # none: a trace of its own
    time.sleep(1.0)
    err = rec.stop()
    assert "0 failed, 0 dropped" in err, err
    servers, clients = {}, {}
    for _res, span in otlp_receiver.spans():
        a = attrs(span.attributes)
        if span.kind == SERVER:
            servers[next(iter(a["http.request.header.x-lab"].values)).string_value] = span
        else:
            clients.setdefault(span.parent_span_id, []).append((span, a))
    assert set(sent) < set(servers)
    proxied = 0
    for lab_id, tp in sent.items():
        span = servers[lab_id]
        _v, trace_id, parent, _f = tp.split("-")
        assert span.trace_id.hex() == trace_id, lab_id
        assert span.parent_span_id.hex() == parent, lab_id
        for kid, a in clients.get(span.span_id, []):
            proxied += 1
            assert kid.trace_id.hex() == trace_id
            forwarded = next(iter(a["http.request.header.traceparent"].values)).string_value
            assert forwarded == tp  # nginx passes the header on as it came
    assert proxied == 8
    lone = [s for lab, s in servers.items() if lab not in sent]
    assert len(lone) == 1 and lone[0].parent_span_id == b""
