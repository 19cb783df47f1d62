"""HTTP/2 (``listen ... ssl http2``) against nginx's access log: one exchange per stream.

curl multiplexing on one connection (``--parallel``) and on several (``--parallel-immediate``),
a raw ``h2`` client (request bodies, gRPC-shaped trailers, HPACK dynamic table across
streams), and a connection the capture joins part-way. Real nginx, real eBPF.
"""

from __future__ import annotations

import subprocess
from typing import Any

from ngxscope.lab.h2client import H2Client, h2_exchange
from ngxscope.lab.nginx import LabNginx

from .test_capture_vs_accesslog import _pairs, compare

PATHS = ["/static/small.txt", "/health", "/api/x", "/static/big.bin", "/static/page.html", "/204",
         "/nope", "/fail/503", "/api/chunked?n=5", "/static/data.json"]


def _curl(lab: LabNginx, tag: str, immediate: bool) -> int:
    args = ["curl", "--parallel", "--parallel-max", "20"]
    if immediate:
        args.append("--parallel-immediate")
    for i, path in enumerate(PATHS):
        args += ["-sk", "--http2", "-H", f"X-Lab: {tag}{i}", "-o", "/dev/null",
                 f"https://127.0.0.1:{lab.h2_port}{path}", "--next"]
    subprocess.run(args[:-1], check=True, capture_output=True, timeout=30)
    return len(PATHS)


def _check(lab: LabNginx, cap: Any, sent: int) -> list[Any]:
    log = lab.wait_log_lines(sent)
    assert len(log) == sent
    exchanges = cap.wait_for(sent)
    stats = cap.recorder.counters()
    cap.stop()
    problems = compare(log, exchanges)
    print(f"\naccess log {len(log)} lines (HTTP/2.0: {sum(1 for ln in log if ln['protocol'] == 'HTTP/2.0')}), "
          f"captured {len(exchanges)} exchanges, mismatches {len(problems)}")
    assert not problems, "\n".join(problems[:40])
    assert stats["lost"] == 0
    return _pairs(log, exchanges)


def test_curl_multiplexed_streams_match_access_log(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    sent = _curl(lab_nginx, "mux", immediate=False) + _curl(lab_nginx, "imm", immediate=True)
    pairs = _check(lab_nginx, cap, sent)
    assert all(ex.version == "HTTP/2.0" and ex.tls for _, ex in pairs)
    # streams really shared connections: nginx's $connection and ours agree on the grouping
    by_conn: dict[str, set[str]] = {}
    for line, ex in pairs:
        by_conn.setdefault(ex.conn_id, set()).add(line["connection"])
    assert all(len(v) == 1 for v in by_conn.values())
    assert max(sum(1 for _, ex in pairs if ex.conn_id == c) for c in by_conn) > 1, "multiplexed"
    assert {ex.status for _, ex in pairs} >= {200, 204, 404, 503}


def test_raw_h2_client_matches_access_log(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    grpc = [("content-type", "application/grpc"), ("te", "trailers")]
    reqs = [
        ("GET", "/lab.Echo/Say", [("x-lab", "g1"), *grpc], b""),
        ("POST", "/lab.Echo/Fail", [("x-lab", "g2"), *grpc], b"\0\0\0\0\x03abc"),
        ("GET", "/static/page.html", [("x-lab", "g3"), ("x-custom", "v" * 40)], b""),
        ("POST", "/upload", [("x-lab", "g4")], b"y" * 70000),
        ("GET", "/api/chunked?n=5", [("x-lab", "g5")], b""),
        ("HEAD", "/static/small.txt", [("x-lab", "g6")], b""),
    ]
    responses = h2_exchange(lab_nginx.h2_port, reqs)
    # the second connection reuses HPACK dynamic-table entries between its streams
    more = [("GET", f"/health?i={i}", [("x-lab", f"r{i}"), ("x-custom", "v" * 40)], b"") for i in range(6)]
    responses += h2_exchange(lab_nginx.h2_port, more)
    solo = [("GET", "/api/solo", [("x-lab", "solo")], b"")]
    responses += h2_exchange(lab_nginx.h2_port, solo)
    assert [r.status for r in responses[:2]] == [200, 200]
    pairs = _check(lab_nginx, cap, len(reqs) + len(more) + len(solo))
    lines = {line["lab_id"]: line for line, _ in pairs}
    by_lab = {line["lab_id"]: ex for line, ex in pairs}
    assert by_lab["g1"].reason == "gRPC lab.Echo/Say grpc-status 0 (ok)"
    assert by_lab["g2"].reason == "gRPC lab.Echo/Fail grpc-status 13 (lab failure)"
    assert ("grpc-status", "13") in by_lab["g2"].response_headers
    assert by_lab["g4"].request_body_size == 70000
    # upstream attempts are per client connection: given to a stream only when it was alone
    assert by_lab["g4"].upstream == []
    assert [a.addr for a in by_lab["solo"].upstream] == [lines["solo"]["upstream_addr"]]
    assert ("x-custom", "v" * 40) in by_lab["r5"].request_headers
    assert by_lab["g3"].response_body.startswith(b"<!doctype html>")


def test_h2_connection_joined_midway(lab_nginx: LabNginx, capture_factory: Any) -> None:
    with H2Client(lab_nginx.h2_port) as client:
        client.request_many([("GET", "/health", [("x-lab", "before")], b"")])
        lab_nginx.wait_log_lines(1)
        cap = capture_factory(pid=lab_nginx.master_pid)
        client.request_many([("GET", "/static/small.txt", [("x-lab", f"mid{i}")], b"") for i in range(3)])
        log = lab_nginx.wait_log_lines(4)[1:]
    exchanges = cap.wait_for(3)
    cap.stop()
    assert len(exchanges) == 3
    for ex, line in zip(exchanges, log, strict=True):
        assert ex.error and "joined mid-connection" in ex.error
        assert ex.request_headers == [] and ex.method == "", "never guessed headers"
        assert ex.version == "HTTP/2.0" and ex.response_bytes == line["bytes_sent"]
        assert ex.pid == line["pid"]
