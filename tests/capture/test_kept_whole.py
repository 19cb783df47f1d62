"""Rows a keep rule holds at completion are whole, though their exchange was sampled out.

Every exchange is sampled out (1 in 2**30) while wrk saturates the lab nginx; a client on
one keep-alive connection sends the requests the keep rules are about, each with its own
X-Lab header. The kernel holds the first bytes of each sampled-out exchange (bpf/capture.c
`staged`) and sends them only when a rule keeps it: every kept access-log line must be a
row with kept_by set, its request headers as sent (X-Lab included) and its response status
line and headers exactly as the client received them, over plain HTTP and TLS.
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
import threading
from typing import Any

from ngxscope.decode.handlers.http1 import STAGED_CUT
from ngxscope.lab.nginx import LabNginx

from .test_kcounts import SLOW_MS, kept_by

Received = dict[str, tuple[int, list[tuple[str, str]], list[tuple[str, str]]]]


def _client(port: int, tls: bool, stop: threading.Event, received: Received) -> None:
    """Requests the keep rules are about (and others), each named by its X-Lab header; what
    came back for each: status, response headers, the request headers sent."""
    paths = ["/fail/500", "/fail/503", "/slow/x?ms=60", "/flaky/a", "/api/x", "/fail/404", "/fail/502"]
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while not stop.is_set() and i < 200:
        path = paths[i % len(paths)]
        lab_id = f"kw-{'tls' if tls else 'plain'}-{i}"
        sent = [("Host", f"127.0.0.1:{port}"), ("Accept-Encoding", "identity"), ("X-Lab", lab_id),
                ("User-Agent", "kept-whole-test")]
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        received[lab_id] = (resp.status, list(resp.getheaders()), sent)
        i += 1
    conn.close()


def test_kept_rows_are_whole(lab_nginx: LabNginx, capture_factory: Any) -> None:
    start = lab_nginx.log_line_count()
    cap = capture_factory(pid=lab_nginx.master_pid, cpu_budget=0, keep_slower_than_ms=SLOW_MS)
    assert cap.recorder.kcounts is not None, "the lab nginx's request layout is known: counting must be on"
    assert cap.recorder.tracer.set_sampling(1 << 30)
    stop, received = threading.Event(), {}
    sides = [threading.Thread(target=_client, args=(port, tls, stop, received))
             for port, tls in ((lab_nginx.plain_port, False), (lab_nginx.tls_port, True))]
    for side in sides:
        side.start()
    url = f"http://127.0.0.1:{lab_nginx.plain_port}/health"
    subprocess.run(["wrk", "-t1", "-c8", "-d3s", url], check=True, capture_output=True, timeout=60)
    stop.set()
    for side in sides:
        side.join()
    total = lab_nginx.log_line_count() - start
    log = lab_nginx.wait_log_lines(total, start=start)
    kept_lines = [ln for ln in log if kept_by(ln, SLOW_MS)]
    cap.wait_for(len(kept_lines), timeout=30)
    cap.stop()
    rows = list(cap.sink.exchanges)
    assert cap.recorder.counters()["lost"] == 0
    mine = [ln for ln in kept_lines if str(ln.get("lab_id") or "").startswith("kw-")]
    assert total > 2000 and len(mine) > 20, (total, len(mine))
    assert {ln["https"] for ln in mine} == {"on", ""}, "kept rows over TLS and plain"
    assert len(rows) == len(kept_lines), (len(rows), len(kept_lines))

    # every kept row is whole: a request head with headers, a response head with headers
    for ex in rows:
        assert ex.kept_by, ex
        assert not ex.summary_only, (ex.kept_by, ex.method, ex.target, ex.status)
        assert ex.method and ex.request_headers and ex.response_headers, ex
        assert ex.error in (None, STAGED_CUT), (ex.error, ex.target)

    by_id = {}
    for ex in rows:
        lab = [v for k, v in ex.request_headers if k.lower() == "x-lab"]
        if lab:
            by_id[lab[0]] = ex
    for ln in mine:
        ex = by_id.get(ln["lab_id"])
        assert ex is not None, f"kept log line {ln['lab_id']} {ln['request']} {ln['status']} is not a whole row"
        status, resp_headers, sent = received[ln["lab_id"]]
        assert ex.status == status == ln["status"] and ex.tls == (ln["https"] == "on")
        assert sorted(ex.kept_by.split(",")) == sorted(kept_by(ln, SLOW_MS))
        assert ex.request_headers == sent
        assert ex.response_headers == resp_headers
        assert ex.response_bytes == ln["bytes_sent"] and ex.request_bytes == ln["request_length"]
