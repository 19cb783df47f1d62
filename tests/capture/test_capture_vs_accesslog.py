"""The capture against nginx's own access log: every logged request, field by field.

Real nginx (2 workers, plain + TLS, upstreams), real eBPF, real traffic from the lab's
raw-socket generator (keep-alive, pipelining, chunked, HEAD, 204/304, POST > 64 KiB buffered
to disk, Expect: 100-continue, 404/5xx, sendfile, retries) on concurrent connections.
"""

from __future__ import annotations

from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic

from .truth import by_lab_id, compare


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
    pairs, _unpaired = by_lab_id(log, exchanges)
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
