"""`record --metrics-listen`: a real Prometheus scrapes a real capture of the lab nginx;
PromQL answers against nginx's access log."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from prometheus_client import generate_latest

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.telemetry.labels import OTHER, BoundedLabel, split_addr, status_class
from ngxscope.telemetry.prometheus import MetricsSink, parse_listen

from .conftest import split_upstream


def test_labels_and_listen_parsing() -> None:
    assert status_class(204) == "2xx" and status_class(None) == "none" and status_class(999) == "none"
    assert split_addr("[::1]:80") == ("::1", 80)
    assert split_addr("unix:/run/app.sock") == ("unix:/run/app.sock", None)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    assert parse_listen("127.0.0.1:9") == ("127.0.0.1", 9)
    bounded = BoundedLabel(limit=2)
    assert [bounded(v) for v in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]


def test_metrics_never_label_paths() -> None:
    sink = MetricsSink(None)
    for i in range(50):
        sink.write_exchange(Exchange(id=i, start=1.0, end=1.002, pid=7, client="1.2.3.4:5", server="1.1.1.1:80",
                                     tls=False, method="GET", target=f"/user/{i}?q={i}", status=200,
                                     upstream=[UpstreamAttempt(addr="10.0.0.1:80", status=200, duration_ms=1.0,
                                                               group="app")]))

    body = generate_latest(sink.registry).decode()
    assert "/user/" not in body
    assert 'ngxscope_http_requests_total{location="unknown",method="GET",server_block="unknown",status_class="2xx",worker="7"} 50.0' in body
    assert 'ngxscope_upstream_attempts_total{group="app",peer="10.0.0.1:80"' in body


def test_kernel_counts_join_the_series_once() -> None:
    """The stats record's `counted` is cumulative: each new record adds only what is new."""
    from ngxscope.capture.kcounts import hist_bucket

    def counted(n: int) -> dict[str, Any]:
        return {"requests": n, "rows": [{"pid": 7, "server": "shop", "peer": None, "status": 200, "n": n,
                                         "request_length": 10 * n, "bytes_sent": 100 * n}],
                "hist": [{"pid": 7, "server": "shop", "peer": None, "class": 2, "which": "request",
                          "buckets": {str(hist_bucket(3000)): n}}]}

    sink = MetricsSink(None)
    sink.write_stats({"counted": counted(600)})
    sink.write_stats({"counted": counted(1000)})
    sink.write_stats({"counted": counted(1000)})
    r = sink.registry
    labels = {"worker": "7", "server_block": "shop", "location": "(counted)", "status_class": "2xx"}
    assert r.get_sample_value("ngxscope_http_requests_total", {**labels, "method": "_OTHER"}) == 1000
    assert r.get_sample_value("ngxscope_http_response_size_bytes_total", {"worker": "7", "server_block": "shop"}) == 100000
    assert r.get_sample_value("ngxscope_http_request_duration_seconds_count", labels) == 1000
    assert r.get_sample_value("ngxscope_http_request_duration_seconds_bucket", {**labels, "le": "0.0025"}) == 0
    assert r.get_sample_value("ngxscope_http_request_duration_seconds_bucket", {**labels, "le": "0.005"}) == 1000


def _wait_equal(prom: Any, promql: str, want: float, timeout: float = 20.0) -> float | None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = prom.scalar(promql)
        if got == want:
            return got
        time.sleep(0.5)
    return got


def test_prometheus_scrapes_match_access_log(lab_nginx: LabNginx, record_proc: Any,
                                             prometheus_factory: Any) -> None:
    mport = free_port()
    rec = record_proc("--pid", str(lab_nginx.master_pid), "--metrics-listen", f"127.0.0.1:{mport}")
    prom = prometheus_factory(f"127.0.0.1:{mport}")
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=3, concurrency=4)
    log = lab_nginx.wait_log_lines(sent)
    total = _wait_equal(prom, "sum(ngxscope_http_requests_total)", float(len(log)))

    want_classes = Counter(status_class(int(line["status"])) for line in log)
    want_peers: Counter[str] = Counter()
    want_peer_status: Counter[tuple[str, str]] = Counter()
    for line in log:
        addrs = split_upstream(line["upstream_addr"])
        statuses = split_upstream(line["upstream_status"])
        for addr, st in zip(addrs, statuses, strict=True):
            want_peers[addr] += 1
            want_peer_status[(addr, status_class(int(st)) if st.isdigit() else "none")] += 1
    want_bytes = sum(int(line["bytes_sent"]) for line in log)
    want_req_bytes = sum(int(line["request_length"]) for line in log)

    classes = prom.by("sum by (status_class) (ngxscope_http_requests_total)", "status_class")
    peers = prom.by("sum by (peer) (ngxscope_upstream_attempts_total)", "peer")
    peer_status = {(r["metric"]["peer"], r["metric"]["status_class"]): float(r["value"][1])
                   for r in prom.query("sum by (peer, status_class) (ngxscope_upstream_attempts_total)")}
    hist_count = prom.scalar("sum(ngxscope_http_request_duration_seconds_count)")
    resp_bytes = prom.scalar("sum(ngxscope_http_response_size_bytes_total)")
    req_bytes = prom.scalar("sum(ngxscope_http_request_size_bytes_total)")
    workers = prom.by("sum by (worker) (ngxscope_http_requests_total)", "worker")
    up = prom.scalar('up{job="ngxscope"}')
    attached = prom.scalar("ngxscope_capture_up")
    captured_workers = prom.scalar("ngxscope_capture_workers")
    print(f"\naccess log: {len(log)} requests, classes {dict(want_classes)}, peers {dict(want_peers)}, "
          f"bytes sent {want_bytes}, request bytes {want_req_bytes}")
    print(f"PromQL:     {total} requests, classes {classes}, peers {peers}, bytes sent {resp_bytes}, "
          f"request bytes {req_bytes}, histogram count {hist_count}, workers {workers}, up {up}")
    rec.stop()
    assert up == 1.0 and attached == 1.0 and captured_workers == 2.0
    assert total == len(log) == sent
    assert classes == {k: float(v) for k, v in want_classes.items()}
    assert peers == {k: float(v) for k, v in want_peers.items()}
    assert peer_status == {k: float(v) for k, v in want_peer_status.items()}
    assert hist_count == len(log)
    assert resp_bytes == want_bytes and req_bytes == want_req_bytes
    assert set(workers) == {str(line["pid"]) for line in log}
    assert len(want_peers) >= 3, "the lab's app, slow and flaky peers (dead one included) are exercised"
