"""The lab nginx against itself: the traffic generator's request count and bytes must match
nginx's own JSON access log exactly (this is the truth harness of the capture tests)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from ngxscope.lab.nginx import LOG_FIELDS, LabError, LabNginx
from ngxscope.lab.traffic import Traffic

pytestmark = pytest.mark.capture  # every test starts real nginx processes


def _settled_log(nginx: LabNginx, n: int) -> list[dict]:
    """Wait for `n` lines, then make sure no more arrive."""
    nginx.wait_log_lines(n, timeout=15)
    time.sleep(0.3)
    return nginx.read_access_log()


def test_starts_master_and_two_workers(lab_nginx: LabNginx) -> None:
    master = psutil.Process(lab_nginx.master_pid)
    assert "master process" in " ".join(master.cmdline())
    workers = lab_nginx.worker_pids()
    assert len(workers) == 2
    for pid in workers:
        assert psutil.Process(pid).ppid() == lab_nginx.master_pid
    assert lab_nginx.base_url(False) == f"http://127.0.0.1:{lab_nginx.plain_port}"
    assert lab_nginx.base_url(True) == f"https://127.0.0.1:{lab_nginx.tls_port}"
    assert len(lab_nginx.upstream_addrs) == 2
    # readiness probes (bare connects) leave no access-log lines behind
    assert lab_nginx.read_access_log() == []


def test_run_mix_matches_access_log_exactly(lab_nginx: LabNginx) -> None:
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent = traffic.run_mix(rounds=3, concurrency=4)
    assert sent == len(traffic.records) == 3 * 2 * 33  # 33 requests per round and port
    log = _settled_log(lab_nginx, sent)
    assert len(log) == sent

    by_id = {rec["lab_id"]: rec for rec in log}
    assert len(by_id) == sent, "every request is logged exactly once"
    for req in traffic.records:
        line = by_id[req.lab_id]
        assert line["method"] == req.method
        assert line["uri"] == req.target
        assert line["status"] == req.status
        assert line["https"] == ("on" if req.tls else "")
        assert line["request_completion"] == "OK"
        # $bytes_sent counts an interim "100 Continue" too
        assert line["bytes_sent"] == req.response_bytes + req.interim_bytes, req
        # discarded bodies are not counted; all mix bodies are read (proxied)
        assert line["request_length"] == req.request_bytes, req

    statuses = Counter(line["status"] for line in log)
    assert {200, 204, 304, 404, 500, 502, 503} <= set(statuses)
    assert statuses[304] == 3 * 2
    assert set(lab_nginx.worker_pids()) >= {line["pid"] for line in log}

    # upstream details
    flaky = [line for line in log if line["uri"].startswith("/flaky/")]
    retried = [line for line in flaky if "," in line["upstream_addr"]]
    assert retried, "the dead peer of the flaky group is tried and skipped"
    for line in retried:
        assert line["upstream_status"] == "502, 200"
        assert line["upstream_addr"].split(", ")[1] in lab_nginx.upstream_addrs
    api = [line for line in log if line["uri"].startswith("/api/")]
    assert {line["upstream_addr"] for line in api} == set(lab_nginx.upstream_addrs)
    assert "0.000" in {line["upstream_connect_time"] for line in api}  # keepalive reuse
    slow = [line for line in log if line["uri"].startswith("/slow/")]
    assert all(line["request_time"] >= 0.029 for line in slow)

    big = [line for line in log if line["uri"] == "/static/big.bin"]
    assert len(big) == 6 and all(line["body_bytes_sent"] == 1 << 20 for line in big)
    uploads = [line for line in log if line["uri"] == "/upload"]
    # a buffered chunked body is de-chunked: $content_length then shows its size (51200)
    assert {line["content_length"] for line in uploads} == {"1000", "102400", "71680", "51200"}
    assert "buffered to a temporary file" in lab_nginx.error_log_path.read_text()


def test_pipelined_requests_share_a_connection(lab_nginx: LabNginx) -> None:
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    paths = ["/health", "/static/small.txt", "/api/p", "/204", "/nope"]
    assert traffic.pipelined(False, paths) == 5
    assert traffic.pipelined(True, paths) == 5
    log = _settled_log(lab_nginx, 10)
    assert len(log) == 10
    for tls in ("", "on"):
        lines = [ln for ln in log if ln["https"] == tls]
        assert len({ln["connection"] for ln in lines}) == 1
        assert sorted(ln["connection_requests"] for ln in lines) == [1, 2, 3, 4, 5]
        assert [ln["status"] for ln in lines] == [200, 200, 200, 204, 404]


def test_reload_gives_new_workers(lab_nginx: LabNginx) -> None:
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    old = set(lab_nginx.worker_pids())
    assert traffic.keepalive(False, ["/health"]) == 1
    new = lab_nginx.reload()
    assert len(new) == 2 and not (set(new) & old)
    assert set(lab_nginx.worker_pids()) == set(new)
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == "zombie" for p in old)
    assert traffic.keepalive(True, ["/health", "/api/x"]) == 2
    log = _settled_log(lab_nginx, 3)
    assert len(log) == 3
    assert log[0]["pid"] in old and {log[1]["pid"], log[2]["pid"]} <= set(new)


def test_tls_handshake_and_certificate(lab_nginx: LabNginx) -> None:
    ctx = ssl.create_default_context(cafile=str(lab_nginx.prefix / "tls" / "cert.pem"))
    with (
        socket.create_connection(("127.0.0.1", lab_nginx.tls_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nok\n")
    (line,) = _settled_log(lab_nginx, 1)
    assert line["https"] == "on" and line["ssl_protocol"].startswith("TLSv1.")
    assert line["server"] == f"127.0.0.1:{lab_nginx.tls_port}"


def test_access_log_fields_parse(lab_nginx: LabNginx) -> None:
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    traffic.keepalive(False, ["/api/fields?x=1", "/static/small.txt"])
    proxied, static = _settled_log(lab_nginx, 2)
    assert set(proxied) == set(LOG_FIELDS)
    for line in (proxied, static):
        for key in (
            "status",
            "bytes_sent",
            "body_bytes_sent",
            "request_length",
            "connection",
            "connection_requests",
            "pid",
        ):
            assert isinstance(line[key], int), key
        assert isinstance(line["request_time"], float)
        assert abs(line["msec"] - time.time()) < 60
        assert line["client"].startswith("127.0.0.1:")
        assert line["server"] == f"127.0.0.1:{lab_nginx.plain_port}"
        assert line["protocol"] == "HTTP/1.1" and line["host"] == "localhost"
        assert len(line["request_id"]) == 32
    assert proxied["request"] == "GET /api/fields?x=1 HTTP/1.1"
    assert proxied["upstream_addr"] in lab_nginx.upstream_addrs
    assert proxied["upstream_status"] == "200"
    assert int(proxied["upstream_bytes_received"]) > 0
    assert static["upstream_addr"] == "" and static["body_bytes_sent"] == 200
    assert static["connection"] == proxied["connection"]


def test_expect_continue_and_discarded_bodies(lab_nginx: LabNginx) -> None:
    """Documents nginx 1.22's accounting: the 100 Continue is in $bytes_sent; a discarded
    request body is not in $request_length; error responses skip the 100 Continue."""
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    traffic.post(False, 70_000, expect_continue=True)  # proxied: 100, body read
    traffic.post(False, 70_000, path="/204", expect_continue=True)  # 100, body discarded
    traffic.post(False, 70_000, path="/nope", expect_continue=True)  # 404 at once, no 100
    traffic.post(False, 5_000, path="/204")  # body discarded
    log = {ln["lab_id"]: ln for ln in _settled_log(lab_nginx, 4)}
    upload, disc100, err, disc = traffic.records
    assert upload.interim == [100] and upload.interim_bytes == 25
    assert log[upload.lab_id]["request_length"] == upload.request_bytes
    assert log[upload.lab_id]["bytes_sent"] == upload.response_bytes + 25
    assert disc100.interim == [100]
    assert log[disc100.lab_id]["request_length"] == disc100.request_bytes - 70_000
    assert log[disc100.lab_id]["bytes_sent"] == disc100.response_bytes + 25
    assert err.interim == [] and err.status == 404
    assert log[err.lab_id]["request_length"] == err.request_bytes - 70_000  # never sent
    assert log[disc.lab_id]["request_length"] == disc.request_bytes - 5_000


def test_run_forever_is_rate_limited_and_logged(lab_nginx: LabNginx) -> None:
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(traffic.run_forever(stop, 40.0)))
    thread.start()
    time.sleep(1.5)
    stop.set()
    thread.join(10)
    (sent,) = result
    assert 20 <= sent <= 90
    assert len(_settled_log(lab_nginx, sent)) == sent


def test_startup_failure_raises_with_error_log(tmp_path: Path) -> None:
    nginx = LabNginx(workers=1, prefix=tmp_path, extra_http="    no_such_directive on;")
    with pytest.raises(LabError, match="unknown directive"):
        nginx.start()
    assert nginx._proc is None and nginx._backends == []
    assert tmp_path.exists()  # a caller's prefix is left in place


def test_stop_kills_everything_and_removes_prefix() -> None:
    nginx = LabNginx(workers=3)
    with nginx:
        prefix = nginx.prefix
        pids = [nginx.master_pid, *nginx.worker_pids()]
        assert len(pids) == 4 and prefix.is_dir()
        backends = [p.pid for p in nginx._backends]
    for pid in pids + backends:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not prefix.exists()
    assert os.path.basename(prefix).startswith("ngxscope-lab-")


def test_nginx_addr_writes_ipv6_as_nginx_logs_it() -> None:
    """ngxscope keeps IPv6 addresses bracketed ("[::1]:60752", unambiguous); nginx's
    $remote_addr:$remote_port says "::1:60752": comparisons go through nginx_addr."""
    from ngxscope.lab.config import nginx_addr

    assert nginx_addr("[::1]:60752") == "::1:60752"
    assert nginx_addr("[2001:db8::7]:443") == "2001:db8::7:443"
    assert nginx_addr("127.0.0.1:80") == "127.0.0.1:80"
    assert nginx_addr("") == ""


def test_log_line_count_reads_only_what_was_appended(tmp_path: Path) -> None:
    lab = LabNginx(prefix=tmp_path)   # not started: only its log is used
    log = lab.access_log_path
    log.parent.mkdir(parents=True)
    assert lab.log_line_count() == 0          # no log yet
    log.write_bytes(b'{"a":1}\n{"a":2}\n{"a"')
    assert lab.log_line_count() == 2          # a line being written is not one yet
    with log.open("ab") as fh:
        fh.write(b':3}\n{"a":4}\n')
    assert lab.log_line_count() == 4
    log.write_bytes(b'{"a":1}\n')             # truncated in place (same inode)
    assert lab.log_line_count() == 1
    log.rename(tmp_path / "old.log")          # rotated: a new file at the path
    log.write_bytes(b'x\ny\nz\n')
    assert lab.log_line_count() == 3
    assert lab.log_line_count(tmp_path / "old.log") == 1
