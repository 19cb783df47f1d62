"""The capture against nginx's own access log: every logged request, field by field.

Real nginx (2 workers, plain + TLS, upstreams), real eBPF, real traffic from the lab's
raw-socket generator (keep-alive, pipelining, chunked, HEAD, 204/304, POST > 64 KiB buffered
to disk, Expect: 100-continue, 404/5xx, sendfile, retries) on concurrent connections.
"""

from __future__ import annotations

from typing import Any

import pytest

from ngxscope.lab.config import nginx_addr
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange

CLOCK_SLACK = 0.001
"""Seconds: nginx logs whole ms (truncated), and kernel time becomes Unix time through an
offset sampled once at attach."""


def _lab_id(ex: Exchange) -> str | None:
    for k, v in ex.request_headers:
        if k.lower() == "x-lab":
            return v
    return None


def compare(log: list[dict[str, Any]], exchanges: list[Exchange]) -> list[str]:
    """Field-by-field differences between log lines and captured exchanges."""
    by_id: dict[str, list[Exchange]] = {}
    for ex in exchanges:
        lid = _lab_id(ex)
        if lid is not None:
            by_id.setdefault(lid, []).append(ex)
    problems = []
    for line in log:
        lid = line.get("lab_id")
        found = by_id.get(lid, [])
        if len(found) != 1:
            problems.append(f"{line['request']!r} (lab {lid}): {len(found)} captured exchanges")
            continue
        ex = found[0]
        want_ms = float(line["request_time"]) * 1000
        checks = {
            "method": (ex.method, line["method"]),
            "target": (ex.target, line["uri"]),
            "status": (ex.status, line["status"]),
            "request_bytes": (ex.request_bytes, line["request_length"]),
            "response_bytes": (ex.response_bytes, line["bytes_sent"]),
            "client": (nginx_addr(ex.client), line["client"]),  # IPv6: "[::1]:p" is "::1:p" there
            "server": (nginx_addr(ex.server), line["server"]),
            "pid": (ex.pid, int(line["pid"])),
            "tls": (ex.tls, line["https"] == "on"),
            "version": (ex.version, line["protocol"]),
        }
        for field, (got, want) in checks.items():
            if got != want:
                problems.append(f"{line['request']!r} (lab {lid}): {field} {got!r} != log {want!r}")
        # nginx's own clock read at the exchange's first and last events, as it computes
        # $request_time: must agree to its 1 ms resolution (the right events were chosen)
        if ex.nginx_ms is None or abs(ex.nginx_ms - want_ms) > 1.0:
            problems.append(f"{line['request']!r} (lab {lid}): nginx_ms {ex.nginx_ms} vs log {want_ms:.0f} ms")
        # the true times (kernel clock at the I/O calls) against nginx's: nginx reads the
        # clock once per event-loop turn, before the calls of that turn, so its times are
        # never later than the true ones; how much earlier is how long the turn had run (on a
        # loaded box, tens of ms: no bound on that is load-independent)
        msec = float(line["msec"])
        nginx_start = msec - float(line["request_time"])
        if ex.start < nginx_start - CLOCK_SLACK:
            problems.append(f"{line['request']!r} (lab {lid}): start {ex.start:.4f} before nginx's "
                            f"$msec - $request_time {nginx_start:.3f}")
        if ex.end < msec - CLOCK_SLACK:
            problems.append(f"{line['request']!r} (lab {lid}): end {ex.end:.4f} before nginx's $msec {msec:.3f}")
        if ex.error:
            problems.append(f"{line['request']!r} (lab {lid}): error {ex.error}")
    return problems


def _pairs(log: list[dict[str, Any]], exchanges: list[Exchange]) -> list[tuple[dict[str, Any], Exchange]]:
    by_id = {_lab_id(ex): ex for ex in exchanges}
    return [(line, by_id[line["lab_id"]]) for line in log if line.get("lab_id") in by_id]


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_capture_matches_access_log(lab_nginx: LabNginx, capture_factory: Any, syscall_io: bool) -> None:
    """Both ways of seeing plaintext I/O: recv(2)/writev(2) tracepoints (the default), and
    the ngx_unix_recv/ngx_writev uprobe + uretprobe pairs used when those are unavailable."""
    cap = capture_factory(pid=lab_nginx.master_pid, syscall_io=syscall_io)
    assert cap.recorder.tracer.syscall_io is syscall_io
    assert "capturing 2 workers" in cap.line
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent = traffic.run_mix(rounds=4, concurrency=4)
    log = lab_nginx.wait_log_lines(sent)
    assert len(log) == sent
    exchanges = cap.wait_for(sent)
    stats = cap.recorder.counters()
    cap.stop()
    problems = compare(log, exchanges)
    pairs = _pairs(log, exchanges)
    diffs = [abs(ex.duration_ms - float(line["request_time"]) * 1000) for line, ex in pairs]
    within = sum(
        1 for (line, ex), d in zip(pairs, diffs, strict=True) if d <= max(3.0, 0.15 * float(line["request_time"]) * 1000)
    )
    # how far nginx's cached clock trailed the kernel's at the first and the last event
    lag_start = [(ex.start - float(line["msec"]) + float(line["request_time"])) * 1000 for line, ex in pairs]
    lag_end = [(ex.end - float(line["msec"])) * 1000 for line, ex in pairs]
    print(f"\naccess log {len(log)} lines, captured {len(exchanges)} exchanges, mismatches {len(problems)}; "
          f"true duration within max(3 ms, 15%) of $request_time: {within}/{len(pairs)}, "
          f"max |duration - request_time| {max(diffs):.2f} ms; nginx's clock behind the kernel's "
          f"at the start {min(lag_start):.2f}..{max(lag_start):.2f} ms, at the end "
          f"{min(lag_end):.2f}..{max(lag_end):.2f} ms")
    assert not problems, f"{len(problems)} mismatches of {sent}:\n" + "\n".join(problems[:40])
    assert {ex.pid for ex in exchanges} == set(lab_nginx.worker_pids()), "both workers captured"
    assert {ex.tls for ex in exchanges} == {True, False}
    assert stats["lost"] == 0
    # the mix covers what the issue names
    statuses = {ex.status for ex in exchanges}
    assert {200, 204, 304, 404, 500, 502, 503} <= statuses
    assert any(ex.sendfile_bytes for ex in exchanges), "sendfile bodies are counted"
    assert any(ex.method == "HEAD" for ex in exchanges)
    assert any(ex.request_body_size > 64 * 1024 for ex in exchanges)
