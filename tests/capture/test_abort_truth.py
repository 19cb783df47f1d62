"""Client aborts against nginx's own log: a client that goes away before the answer (nginx
logs 499) and one that goes away in the middle of a large response (nginx logs how many
bytes it had sent): the captured status, answer and bytes of the response sent equal
$status and $bytes_sent (real nginx, real eBPF)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx, free_port

pytestmark = pytest.mark.capture


def _conf(p: Path, port: int) -> str:
    fmt = ('{"lab_id":"$http_x_lab","uri":"$request_uri","status":"$status","bytes_sent":"$bytes_sent",'
           '"body_bytes_sent":"$body_bytes_sent","completion":"$request_completion",'
           '"upstream_status":"$upstream_status"}')
    log = f"access_log {p}/logs/abort.log abortlog;"
    return f"""
    log_format abortlog escape=json '{fmt}';
    server {{
        listen 127.0.0.1:{port};
        server_name abort.test;
        location /buffered/ {{ proxy_pass http://app/api/; {log} }}
        location /streamed/ {{ proxy_pass http://app/api/; proxy_buffering off; {log} }}
    }}
"""


def _abort(port: int, lab_id: str, target: str, read: int, wait: float) -> int:
    """Send a request, read `read` bytes of the answer (0: none) or wait `wait` s, then reset
    the connection (SO_LINGER 0). The bytes read."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: abort.test\r\nX-Lab: {lab_id}\r\n\r\n".encode())
    got = 0
    if read:
        while got < read:
            chunk = s.recv(min(4096, read - got))
            if not chunk:
                break
            got += len(chunk)
    else:
        time.sleep(wait)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    return got


def test_client_aborts_equal_nginx_s_log(tmp_path: Path, capture_factory: Any) -> None:
    port = free_port()
    nginx = LabNginx(workers=1, prefix=tmp_path, extra_http=_conf(tmp_path, port))
    nginx.start()
    try:
        # whole exchanges only: 8 MiB answers can push the capture over its default CPU budget,
        # and a sampled-out row carries no response head to tell a partial answer by
        # (CI failed once: the last case a summary row, answer None)
        cap = capture_factory(pid=nginx.master_pid, cpu_budget=0)
        cases = [("a1", "/buffered/slow?ms=1500", 0, 0.3), ("a2", "/streamed/slow?ms=1500", 0, 0.3),
                 ("a3", "/buffered/big?kb=8192", 20000, 0), ("a4", "/streamed/big?kb=8192", 20000, 0),
                 ("a5", "/streamed/big?kb=8192", 300000, 0)]
        for lab_id, target, read, wait in cases:
            _abort(port, lab_id, target, read, wait)
            time.sleep(0.3)
        log = nginx.wait_log_lines(len(cases), path=tmp_path / "logs" / "abort.log", timeout=20)
        exchanges = cap.wait_for(len(cases))
        cap.stop()
    finally:
        nginx.stop()
    by_id = {dict(ex.request_headers).get("X-Lab"): ex for ex in exchanges}
    problems = []
    for line in log:
        ex = by_id.get(line["lab_id"])
        if ex is None:
            problems.append(f"{line['uri']}: not captured")
            continue
        want_answer = "client-abort" if int(line["status"]) == 499 or line["completion"] != "OK" else None
        got = (ex.status, ex.response_bytes, ex.answer)
        want = (int(line["status"]), int(line["bytes_sent"]), want_answer)
        if got != want:
            problems.append(f"{line['uri']}: captured status/bytes sent/answer {got}, nginx logged {want} ({ex.error})")
        elif int(line["status"]) != 499:  # how far the response had got, in words, from $body_bytes_sent
            assert ex.error and f"after {int(line['body_bytes_sent']):,} of 8,388,608 bytes" in ex.error, ex.error
        print(f"{line['uri']}: {line['status']} {line['bytes_sent']} bytes sent; captured: {ex.error}")
    assert not problems, "\n".join(problems)
    assert sum(1 for line in log if int(line["status"]) == 499) == 2 and len(log) == 5


def test_mid_response_abort_is_kept_while_sampling(tmp_path: Path, capture_factory: Any) -> None:
    """Every exchange sampled out: a client that goes away in the middle of a 200 is still a
    whole row (kept in the kernel at its completion: c->error), answer client-abort, with the
    status and bytes nginx logged; a whole 200 is only counted."""
    port = free_port()
    nginx = LabNginx(workers=1, prefix=tmp_path, extra_http=_conf(tmp_path, port))
    nginx.start()
    try:
        cap = capture_factory(pid=nginx.master_pid, cpu_budget=0)
        assert cap.recorder.kcounts is not None, "the lab nginx's request layout is known: counting must be on"
        assert cap.recorder.tracer.set_sampling(1 << 30)
        cases = [("m1", "/buffered/big?kb=8192", 20000), ("m2", "/streamed/big?kb=8192", 20000),
                 ("m3", "/streamed/big?kb=8192", 300000)]
        for lab_id, target, read in cases:
            _abort(port, lab_id, target, read, 0)
            time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port)) as s:   # whole: counted, not a row
            s.sendall(b"GET /buffered/big?kb=4 HTTP/1.1\r\nHost: abort.test\r\nX-Lab: w1\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
        log = nginx.wait_log_lines(len(cases) + 1, path=tmp_path / "logs" / "abort.log", timeout=20)
        cap.wait_for(len(cases), timeout=20)
        time.sleep(1.5)   # a row the whole 200 should not be would come by now
        cap.stop()
    finally:
        nginx.stop()
    rows = {dict(ex.request_headers).get("X-Lab"): ex for ex in cap.sink.exchanges}
    problems = []
    for line in log:
        if line["lab_id"] == "w1":
            assert line["completion"] == "OK" and "w1" not in rows, (line, rows.get("w1"))
            continue
        assert int(line["status"]) == 200 and line["completion"] != "OK", line
        ex = rows.get(line["lab_id"])
        if ex is None:
            problems.append(f"{line['uri']}: no row (counted only)")
            continue
        got = (ex.status, ex.response_bytes, ex.answer, ex.kept_by)
        want = (200, int(line["bytes_sent"]), "client-abort", "aborted")
        if got != want:
            problems.append(f"{line['uri']}: captured status/bytes sent/answer/kept_by {got}, want {want} ({ex.error})")
    assert not problems, "\n".join(problems)
    assert cap.recorder.counters()["counted"]["requests"] == 1
