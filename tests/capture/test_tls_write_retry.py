"""TLS responses seen at ngx_ssl_write's entry only (no return probe): a client that reads
slowly makes SSL_write say WANT_WRITE, and nginx calls it again with the same buffer (filled
further, perhaps). Those bytes must be captured once: every body byte for byte as the
backend sent it, every size equal to nginx's $bytes_sent, also for a client that goes away
in the middle (real nginx, real eBPF)."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx

from .truth import by_lab_id, request_fields, unequal

pytestmark = pytest.mark.capture

BODY_LINE = (b"0123456789abcdef" * 64)[:1024]
"""One KiB of the lab backend's /big body (lab/backend.py)."""


def _tls(port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: a small window
    raw.settimeout(20)
    raw.connect(("127.0.0.1", port))
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _get(port: int, lab_id: str, kb: int, pause: float, stop_after: int | None = None) -> int:
    """GET /api/big?kb=KB over TLS, pausing `pause` s after every 32 KiB read; with
    `stop_after`, reset the connection once that many bytes were read. The bytes read."""
    s = _tls(port)
    s.sendall(f"GET /api/big?kb={kb} HTTP/1.1\r\nHost: localhost\r\nX-Lab: {lab_id}\r\n"
              "Connection: close\r\n\r\n".encode())
    got, mark = 0, 32768
    while stop_after is None or got < stop_after:
        try:
            chunk = s.recv(16384)
        except ssl.SSLError:
            break
        if not chunk:
            break
        got += len(chunk)
        if got >= mark:
            mark += 32768
            time.sleep(pause)
    if stop_after is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    return got


def test_retried_tls_writes_are_captured_once(lab_nginx: LabNginx, capture_factory: Any) -> None:
    # every exchange whole, bodies too: a few MiB, more than loopback's socket buffers hold
    cap = capture_factory(pid=lab_nginx.master_pid, cpu_budget=0, body_limit=8 << 20)
    cases = [("slow1", 4096, 0.01, None), ("slow2", 3000, 0.005, None), ("fast", 2048, 0.0, None),
             ("gone", 4096, 0.01, 600000)]
    for lab_id, kb, pause, stop_after in cases:
        _get(lab_nginx.tls_port, lab_id, kb, pause, stop_after)
    log = [line for line in lab_nginx.wait_log_lines(len(cases), timeout=20)
           if line.get("lab_id") in {c[0] for c in cases}]
    exchanges = cap.wait_for(len(cases), timeout=20)
    retries = cap.recorder.tracer.counters()["tls_retries"]
    cap.stop()
    pairs, problems = by_lab_id(log, exchanges)
    for line, ex in pairs:
        label = line["lab_id"]
        problems += unequal(label, request_fields(ex, line))
        kb = next(c[1] for c in cases if c[0] == label)
        body = BODY_LINE * kb
        if label == "gone":
            # what was captured of it is what nginx had sent of it, in order
            if not body.startswith(ex.response_body):
                problems.append(f"{label}: the captured part of the body is not the body's start")
            continue
        if ex.truncated or ex.response_body != body or ex.response_body_size != len(body):
            problems.append(f"{label}: body of {len(ex.response_body)} bytes (truncated {ex.truncated}, "
                            f"of size {ex.response_body_size}) is not the backend's {len(body)}")
        if ex.error:
            problems.append(f"{label}: error {ex.error}")
    print(f"\n{len(pairs)} TLS exchanges paired with the log; ngx_ssl_write retries seen: {retries}")
    assert len(log) == len(cases)
    assert not problems, "\n".join(problems)
    assert retries > 0, "no SSL_write was retried: the slow reads did not fill nginx's socket buffer"
