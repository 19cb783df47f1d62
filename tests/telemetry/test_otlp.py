"""`record --otlp-endpoint`: spans of a real capture, decoded from the real OTLP/HTTP protobuf
payload, against nginx's access log; and an endpoint that refuses or hangs never blocks."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.session import SessionReader
from ngxscope.telemetry.otlp import SpanSink, traces_url

from .conftest import OtlpReceiver, attrs, split_upstream

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"


def test_spans_match_access_log(lab_nginx: LabNginx, record_proc: Any, otlp_receiver: OtlpReceiver) -> None:
    rec = record_proc("--pid", str(lab_nginx.master_pid), "--otlp-endpoint", otlp_receiver.url,
                      "--otlp-header", "X-Lab", "--otlp-service-name", "lab-nginx")
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=3, concurrency=4)
    log = lab_nginx.wait_log_lines(sent)
    time.sleep(1.0)  # the last exchanges are decoded
    err = rec.stop()
    assert rec.proc.returncode == 0, err
    assert "0 failed, 0 dropped" in err, err

    spans = otlp_receiver.spans()
    assert otlp_receiver.content_types == {"application/x-protobuf"}
    assert all(res["service.name"] == "lab-nginx" for res, _ in spans)
    servers = {}
    children: dict[bytes, list[Any]] = {}
    for _res, span in spans:
        a = attrs(span.attributes)
        if span.kind == SERVER:
            lab_id = next(iter(a["http.request.header.x-lab"].values)).string_value
            assert lab_id not in servers, f"two server spans for lab id {lab_id}"
            servers[lab_id] = (span, a)
        else:
            assert span.kind == CLIENT
            children.setdefault(span.parent_span_id, []).append((span, a))
    problems = []
    proxied = 0
    for line in log:
        where = f"{line['request']!r} (lab {line['lab_id']})"
        if line["lab_id"] not in servers:
            problems.append(f"{where}: no server span")
            continue
        span, a = servers[line["lab_id"]]
        path, _, query = line["uri"].partition("?")
        client_ip, client_port = line["client"].rsplit(":", 1)
        checks = {
            "http.request.method": line["method"],
            "url.path": path,
            "url.query": query or None,
            "http.response.status_code": line["status"],
            "client.address": client_ip,
            "client.port": int(client_port),
            "network.peer.address": client_ip,
            "server.port": int(line["server"].rsplit(":", 1)[1]),
            "server.address": line["host"],
            "network.protocol.version": line["protocol"].removeprefix("HTTP/"),
            "url.scheme": "https" if line["https"] == "on" else "http",
            "http.response.size": line["bytes_sent"],
            "http.request.size": line["request_length"],
            "nginx.worker.pid": int(line["pid"]),
            "nginx.server_block": line["server_name"],
        }
        for key, want in checks.items():
            if a.get(key) != want:
                problems.append(f"{where}: {key} {a.get(key)!r} != log {want!r}")
        for key in ("http.request.body.size", "http.response.body.size"):
            if not 0 <= a[key] <= a[key.replace(".body", "")]:
                problems.append(f"{where}: {key} {a[key]} out of range")
        # times: the end is when nginx wrote the last byte ($msec has ms resolution)
        end_s, dur_s = span.end_time_unix_nano / 1e9, (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
        if abs(end_s - float(line["msec"])) > 0.05 or abs(dur_s - float(line["request_time"])) > max(0.02, 0.3 * float(line["request_time"])):
            problems.append(f"{where}: span end {end_s:.3f} / {dur_s * 1000:.1f} ms vs log {line['msec']} / {line['request_time']}")
        kids = sorted(children.get(span.span_id, []), key=lambda sa: sa[1]["nginx.upstream.attempt"])
        addrs, statuses = split_upstream(line["upstream_addr"]), split_upstream(line["upstream_status"])
        if addrs:
            proxied += 1
        got = [(f"{k['server.address']}:{k['server.port']}", str(k.get("http.response.status_code", "-")),
                k.get("nginx.upstream.group")) for _, k in kids]
        want = [(addr, st, line["proxy_host"]) for addr, st in zip(addrs, statuses, strict=True)]
        if got != want:
            problems.append(f"{where}: attempts {got} != log {want}")
        for kid, _k in kids:
            if kid.trace_id != span.trace_id or not (
                    span.start_time_unix_nano <= kid.start_time_unix_nano <= kid.end_time_unix_nano <= span.end_time_unix_nano):
                problems.append(f"{where}: attempt span not inside its server span")
    n_children = sum(len(v) for v in children.values())
    print(f"\naccess log {len(log)} requests ({proxied} proxied); OTLP: {len(servers)} server spans, "
          f"{n_children} client spans in {len(otlp_receiver.requests)} export requests; "
          f"mismatches {len(problems)}")
    assert len(servers) == len(log) == sent
    assert n_children == sum(len(split_upstream(line["upstream_addr"])) for line in log)
    assert proxied > 30
    assert not problems, "\n".join(problems[:30])


def _exchange(i: int) -> Exchange:
    return Exchange(id=i, start=1000.0 + i, end=1000.01 + i, pid=1, client="127.0.0.1:5000", server="127.0.0.1:80",
                    tls=False, method="GET", target=f"/x/{i}", version="HTTP/1.1", status=200,
                    upstream=[UpstreamAttempt(addr="127.0.0.1:8081", status=200, duration_ms=5.0, group="app")])


def test_endpoint_down_or_hanging_never_blocks() -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)  # accepts connections (in the backlog), never answers
    endpoints = {"refused": f"http://127.0.0.1:{free_port()}", "hanging": f"http://127.0.0.1:{hang.getsockname()[1]}"}
    try:
        for name, url in endpoints.items():
            sink = SpanSink(url, queue_size=200, batch_size=50, schedule_delay_ms=50, timeout_s=1.0)
            worst = 0.0
            t0 = time.monotonic()
            for i in range(5000):
                t = time.perf_counter()
                sink.write_exchange(_exchange(i))
                worst = max(worst, time.perf_counter() - t)
                assert sink.pending() <= 200, "bounded: never more spans held than the queue size"
            elapsed = time.monotonic() - t0
            t1 = time.monotonic()
            sink.close()
            closing = time.monotonic() - t1
            c = sink.counters()
            print(f"\n{name}: 5000 exchanges (10000 spans) in {elapsed:.2f} s, worst write {worst * 1000:.1f} ms, "
                  f"close {closing:.1f} s; {c}")
            assert c["exported"] == 0
            assert c["dropped"] > 9000 and c["dropped"] + c["failed"] + c["pending"] + c["in_flight"] == 10000
            assert elapsed < 10 and worst < 0.5 and closing < 5
    finally:
        hang.close()


def test_capture_unaffected_by_hanging_endpoint(lab_nginx: LabNginx, record_proc: Any, tmp_path: Path) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    try:
        out = tmp_path / "s.ngxs"
        rec = record_proc("--pid", str(lab_nginx.master_pid), "-o", str(out), "--otlp-endpoint",
                          f"http://127.0.0.1:{hang.getsockname()[1]}", "--otlp-queue", "64", "--otlp-timeout", "1")
        sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=2, concurrency=4)
        log = lab_nginx.wait_log_lines(sent)
        time.sleep(1.0)
        t0 = time.monotonic()
        err = rec.stop()
        stopping = time.monotonic() - t0
    finally:
        hang.close()
    session = SessionReader(str(out)).read_all()
    print(f"\nhanging endpoint: {len(log)} logged, {len(session.exchanges)} captured, stop took {stopping:.1f} s; "
          f"{[ln for ln in err.splitlines() if 'OTLP' in ln]}")
    assert rec.proc.returncode == 0, err
    requests = [ex for ex in session.exchanges if ex.conn_outcome is None]  # not connection records
    assert len(requests) == len(log) == sent
    assert "dropped (queue full)" in err and " 0 spans exported" in err
    assert stopping < 10
