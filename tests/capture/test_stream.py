"""nginx's stream module (TCP proxy) against its own access log: one record per session.

Real nginx with Debian's ngx_stream_module.so, real eBPF. A TCP listener proxies to a group
of a dead peer (``max_fails=0``: tried every third session, a failed attempt that
``proxy_next_upstream`` moves on from) and two TCP peers; another listener has only the dead
peer (status 502). Sessions carry byte counts chosen per session in both directions, and
every fourth one carries an HTTP request as opaque payload: it must stay a TCP session.

Tolerances: values measured on nginx's cached clock ($session_time, $upstream_*_time) are
computed from the same clock readings nginx uses, each floored to the millisecond as nginx
does, so they agree within 1 ms; the true duration (kernel clock at the probes) may trail
nginx's cached clock by an event-loop turn on a loaded 2-core box: within max(20 ms, 30%).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.tcptraffic import run_tcp_sessions
from ngxscope.lab.traffic import Traffic
from ngxscope.model import TCP, Exchange
from ngxscope.store.exporters import SortedExchanges, export
from ngxscope.store.session import SessionWriter
from ngxscope.store.summary import format_summary, summarize


@pytest.fixture
def stream_lab() -> Iterator[LabNginx]:
    nginx = LabNginx(workers=2, stream=True)  # LabError "run scripts/setup.sh" without the module
    nginx.start()
    try:
        yield nginx
    finally:
        nginx.stop()


def _times(value: str) -> list[float | None]:
    return [None if v.strip() == "-" else float(v) * 1000 for v in value.split(",")]


def _close(got: float | None, want: float | None, tol: float) -> bool:
    if want is None or got is None:
        return want is None and got is None
    return abs(got - want) <= tol


def compare_sessions(log: list[dict[str, Any]], exchanges: list[Exchange]) -> list[str]:
    """Field-by-field differences between stream log lines and captured sessions."""
    by_key: dict[tuple[str, str], list[Exchange]] = {}
    for ex in exchanges:
        by_key.setdefault((ex.client, ex.server), []).append(ex)
    problems = []
    for line in log:
        where = f"session {line['client']} -> {line['server']}"
        found = by_key.get((line["client"], line["server"]), [])
        if not found:
            problems.append(f"{where}: not captured")
            continue
        ex = found.pop(0)
        checks = {
            "method": (ex.method, TCP),
            "version": (ex.version, line["protocol"]),
            "status": (ex.status, line["status"]),
            "request_bytes": (ex.request_bytes, line["bytes_received"]),
            "response_bytes": (ex.response_bytes, line["bytes_sent"]),
            "pid": (ex.pid, int(line["pid"])),
            "upstream_addr": (", ".join(a.addr for a in ex.upstream), line["upstream_addr"]),
            "upstream_bytes_sent": (", ".join(str(a.request_bytes) for a in ex.upstream),
                                    line["upstream_bytes_sent"]),
            "upstream_bytes_received": (", ".join(str(a.response_bytes) for a in ex.upstream),
                                        line["upstream_bytes_received"]),
            "error": (ex.error, None),
        }
        for field, (got, want) in checks.items():
            if got != want:
                problems.append(f"{where}: {field} {got!r} != log {want!r}")
        want_ms = float(line["session_time"]) * 1000
        if not _close(ex.nginx_ms, want_ms, 1.0):
            problems.append(f"{where}: nginx_ms {ex.nginx_ms} vs log session_time {want_ms:.0f}")
        if abs(ex.duration_ms - want_ms) > max(20.0, 0.3 * want_ms):
            problems.append(f"{where}: duration {ex.duration_ms:.2f} ms vs log {want_ms:.0f} ms")
        if abs(ex.end - float(line["msec"])) > 0.05:
            problems.append(f"{where}: end {ex.end:.3f} vs log msec {line['msec']}")
        if len(ex.upstream) != len(line["upstream_addr"].split(",")):
            continue
        for field, key in (("connect_ms", "upstream_connect_time"),
                           ("header_ms", "upstream_first_byte_time"),
                           ("duration_ms", "upstream_session_time")):
            for att, want in zip(ex.upstream, _times(line[key]), strict=True):
                if not _close(getattr(att, field), want, 1.0):
                    problems.append(f"{where}: {att.addr} {field} {getattr(att, field)} vs log {want}")
    return problems


def _check_exports(tmp_path: Path, exchanges: list[Exchange]) -> None:
    """HAR skips the TCP sessions and says so; pcapng carries their bytes; stats counts them."""
    src = tmp_path / "stream.ngxs"
    with SessionWriter(src, {"pid": 1}) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    tcp = [ex for ex in exchanges if ex.is_tcp]
    notes: list[str] = []
    assert export(src, "har", tmp_path / "s.har", notes=notes) == len(exchanges) - len(tcp)
    assert notes == [f"{len(tcp)} TCP proxy sessions skipped: HAR holds HTTP only "
                     "(pcapng, JSONL and CSV include them)"]
    entries = json.loads((tmp_path / "s.har").read_text())["log"]["entries"]
    assert [e["request"]["method"] for e in entries] == ["GET"]
    assert export(src, "pcapng", tmp_path / "s.pcapng") == len(exchanges)
    rows = subprocess.run(["tshark", "-r", str(tmp_path / "s.pcapng"), "-T", "fields", "-e", "tcp.srcport",
                           "-e", "tcp.dstport", "-e", "tcp.len"], check=True, capture_output=True,
                          text=True).stdout.split("\n")
    moved: dict[tuple[int, int], int] = {}
    for row in filter(None, rows):
        a, b, n = row.split("\t")
        moved[(int(a), int(b))] = moved.get((int(a), int(b)), 0) + int(n)
    for ex in tcp:
        cport, sport = int(ex.client.rsplit(":", 1)[1]), int(ex.server.rsplit(":", 1)[1])
        assert moved.get((cport, sport), 0) == ex.request_bytes, ex.client
        assert moved.get((sport, cport), 0) == ex.response_bytes, ex.client
    with SortedExchanges(src) as source:
        summary = summarize(source)
    assert summary.tcp == len(tcp) and summary.requests == len(exchanges)
    text = format_summary(summary)
    assert f"tcp sessions {len(tcp)}" in text and "TCP 127.0.0.1:" in text


def test_stream_sessions_match_access_log(stream_lab: LabNginx, capture_factory: Any,
                                          tmp_path: Path) -> None:
    cap = capture_factory(pid=stream_lab.master_pid)
    tracer = cap.recorder.tracer
    assert tracer is not None and "ngx_stream" in tracer.attached, "stream module probes attached"
    sessions = run_tcp_sessions(stream_lab.tcp_port, 36, concurrency=4)
    sessions += run_tcp_sessions(stream_lab.tcp_fail_port, 4, concurrency=2, seed=3)
    Traffic(stream_lab.plain_port, stream_lab.tls_port).keepalive(False, ["/health"])  # HTTP too
    log = stream_lab.wait_stream_lines(len(sessions))
    everything = cap.wait_for(len(sessions) + 1)
    stats = cap.recorder.counters()
    cap.stop()
    exchanges = [ex for ex in everything if ex.is_tcp]
    assert [ex.target for ex in everything if not ex.is_tcp] == ["/health"]
    problems = compare_sessions(log, exchanges)
    print(f"\nstream log {len(log)} lines, captured {len(exchanges)} records, "
          f"mismatches {len(problems)}")
    assert not problems, "\n".join(problems[:40])
    assert stats["lost"] == 0
    # nothing else: the HTTP-looking payloads did not become HTTP exchanges
    assert len(exchanges) == len(log) == 40 and all(ex.is_tcp for ex in exchanges)
    assert {ex.status for ex in exchanges} == {200, 502}
    dead = f"127.0.0.1:{stream_lab.dead_port}"
    retried = [ex for ex in exchanges if len(ex.upstream) == 2]
    assert retried and all(ex.upstream[0].addr == dead and ex.upstream[0].connect_ms is None
                           for ex in retried)
    http_text = [ex for ex in exchanges if ex.request_body.startswith(b"GET /not-http-")]
    assert len(http_text) >= 8
    assert all(ex.response_body == ex.request_body for ex in http_text if ex.status == 200)
    for ex in exchanges:
        if ex.status == 200 and not ex.truncated:
            assert len(ex.request_body) == ex.request_bytes
            assert len(ex.response_body) == ex.response_bytes
    _check_exports(tmp_path, everything)
