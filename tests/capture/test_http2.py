"""HTTP/2 (``listen ... ssl http2``) against nginx's access log: one exchange per stream.

curl multiplexing on one connection (``--parallel``) and on several (``--parallel-immediate``),
a raw ``h2`` client (request bodies, gRPC-shaped trailers, HPACK dynamic table across
streams), and a connection the capture joins part-way. Real nginx, real eBPF.

Upstream attempts are attributed per stream even when the streams of one connection are
proxied concurrently (each upstream event names the request it serves).
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from ngxscope.lab.h2client import H2Client, h2_exchange
from ngxscope.lab.nginx import LabNginx

from .test_upstreams import compare_upstreams
from .truth import by_lab_id, compare

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
    return by_lab_id(log, exchanges)[0]


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
    # upstream attempts are per stream (the request each upstream event serves)
    assert [a.addr for a in by_lab["g4"].upstream] == [lines["g4"]["upstream_addr"]]
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


def _max_overlap(lines: list[dict[str, Any]]) -> int:
    """Most requests nginx had in progress at once on one connection (from the log's own
    $msec - $request_time .. $msec)."""
    best = 0
    by_conn: dict[int, list[tuple[float, int]]] = {}
    for ln in lines:
        marks = by_conn.setdefault(ln["connection"], [])
        marks += [(ln["msec"] - ln["request_time"], 1), (ln["msec"], -1)]
    for marks in by_conn.values():
        now = 0
        for _t, step in sorted(marks, key=lambda m: (m[0], m[1])):
            now += step
            best = max(best, now)
    return best


def test_multiplexed_streams_get_their_own_upstreams(lab_nginx: LabNginx, capture_factory: Any) -> None:
    """3 connections x 10 concurrent proxied streams (slow peers answering out of order,
    retries past the dead peer, 503s, POST bodies): $upstream_addr, $upstream_status, the
    times and bytes of every attempt, per stream, as nginx logged them."""
    cap = capture_factory(pid=lab_nginx.master_pid)

    def batch(conn: int) -> list[tuple[str, str, list[tuple[str, str]], bytes]]:
        out = []
        for i in range(10):
            tag = [("x-lab", f"m{conn}-{i}")]
            kind = i % 5
            if kind == 0:
                out.append(("GET", f"/slow/slow?ms={60 - 5 * i}", tag, b""))
            elif kind == 1:
                out.append(("GET", f"/flaky/f{i}", tag, b""))
            elif kind == 2:
                out.append(("POST", "/api/echo", tag, b"z" * (1000 * (i + conn + 1))))
            elif kind == 3:
                out.append(("GET", "/fail/503", tag, b""))
            else:
                out.append(("GET", f"/api/chunked?n={i}", tag, b""))
        return out

    threads = [threading.Thread(target=h2_exchange, args=(lab_nginx.h2_port, batch(c))) for c in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pairs = _check(lab_nginx, cap, 30)
    proxied, problems = compare_upstreams(pairs)
    lines = [line for line, _ in pairs]
    overlap = _max_overlap(lines)
    print(f"h2: {len(pairs)} streams over {len({ln['connection'] for ln in lines})} connections, "
          f"max {overlap} overlapping on one, {proxied} proxied, upstream mismatches {len(problems)}")
    assert not problems, "\n".join(problems[:30])
    assert proxied == 30 and len({ln["connection"] for ln in lines}) == 3
    assert overlap >= 4, "the streams of a connection were really in progress together"
    assert any(len(ex.upstream) == 2 for _, ex in pairs), "a retry past the dead peer"
