"""The kernel's per-exchange summary counts every request when all payload is shed.

With SHED_BYTES=0 the programs shed every payload event, so exchanges are built from the
EV_REQ_DONE summary alone: each logged request must still be counted, with nginx's status,
$bytes_sent and its request line (multisets compared: without payload there is no X-Lab id
to pair by). The same holds when exchanges are sampled out (the CPU-budget governor's lever),
and with 1-in-2 sampling each exchange is either whole or a summary, never a mix.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from typing import Any

from ngxscope.capture.events import LINE_CAP
from ngxscope.capture.tracer import Tracer
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange, nginx_list

from .truth import lab_id


def _mix_through(lab: LabNginx, cap: Any, rounds: int = 2) -> tuple[list[dict[str, Any]], list[Exchange], dict[str, Any]]:
    """Run the lab mix with `cap` attached: (its access-log lines, the exchanges, the
    capture's counters), the capture stopped."""
    start = lab.log_line_count()
    sent = Traffic(lab.plain_port, lab.tls_port).run_mix(rounds=rounds, concurrency=2)
    log = lab.wait_log_lines(start + sent)[start:]
    exchanges = cap.wait_for(len(log))
    stats = cap.recorder.counters()
    cap.stop()
    return log, exchanges, stats


def test_every_request_counted_from_the_summary(lab_nginx: LabNginx, capture_factory: Any, monkeypatch: Any) -> None:
    cflags = Tracer.cflags
    monkeypatch.setattr(Tracer, "cflags", lambda self: [*cflags(self), "-DSHED_BYTES=0"])
    cap = capture_factory(pid=lab_nginx.master_pid)
    log, exchanges, stats = _mix_through(lab_nginx, cap)
    assert stats["shed"] > 0 and stats["lost"] == 0
    shed = [ex for ex in exchanges if ex.summary_only and ex.error is None]
    assert len(shed) == len(exchanges) == len(log) == stats["shed_exchanges"]
    assert stats["sampled_exchanges"] == 0
    assert Counter((ex.status, ex.response_bytes) for ex in exchanges) == Counter(
        (line["status"], line["bytes_sent"]) for line in log)
    assert Counter(ex.tls for ex in exchanges) == Counter(line["https"] == "on" for line in log)
    _assert_lines_match(exchanges, log)
    for ex in exchanges:
        assert ex.start <= ex.end and ex.nginx_ms is not None


def _assert_lines_match(exchanges: list[Any], log: list[dict[str, Any]]) -> None:
    """Request lines, statuses and sizes equal the log's as multisets. A pipelined request
    read in the same call as the one before it has no line of its own in the summary: it
    must then match a leftover log line by status and size."""
    left = _lines_of_log(log)
    unnamed: Counter[tuple[int, int]] = Counter()
    for ex in exchanges:
        if not ex.method:
            unnamed[(ex.status, ex.response_bytes)] += 1
            continue
        key = (ex.method, ex.target, ex.status, ex.response_bytes)
        assert left[key] > 0, f"captured {key} not in the log (or more often)"
        left[key] -= 1
    rest = Counter({(st, size): n for (_, _, st, size), n in left.items() if n > 0})
    assert unnamed == rest
    assert sum(unnamed.values()) <= len(log) // 4, "most summaries should carry their request line"


def _lines_of_log(log: list[dict[str, Any]]) -> Counter[tuple[str, str, int, int]]:
    out: Counter[tuple[str, str, int, int]] = Counter()
    for line in log:
        method, target, _ = line["request"].split(" ")
        if len(method) + len(target) + 11 > LINE_CAP:   # longer than the summary keeps
            target = target[: LINE_CAP - len(method) - 1] + "…"
        out[(method, target, line["status"], line["bytes_sent"])] += 1
    return out


def test_sampled_out_exchanges_are_counted_from_the_summary(lab_nginx: LabNginx, capture_factory: Any) -> None:
    """With kernel counting off (record --no-kernel-counts), every sampled-out exchange is a
    summary row (tests/capture/test_kcounts.py: with it on)."""
    cap = capture_factory(pid=lab_nginx.master_pid, kernel_counts=False)
    assert cap.recorder.tracer.set_sampling(1 << 30)   # in effect: every exchange sampled out
    log, exchanges, stats = _mix_through(lab_nginx, cap)
    assert stats["sampled"] > 0 and stats["lost"] == 0
    assert stats["sampled_exchanges"] == len(exchanges) == len(log)
    assert all(ex.summary_only and ex.error is None for ex in exchanges)
    assert all(ex.kept_by is not None and "all" in ex.kept_by.split(",") for ex in exchanges)
    odd = [(ex.target, ex.request_headers, ex.response_headers) for ex in exchanges
           if ex.request_headers or ex.response_headers]
    assert not odd
    # their upstream attempts are nginx's own list, read at completion: what it logs
    assert all(ex.upstream_via == "nginx" for ex in exchanges if ex.upstream)
    assert Counter(nginx_list(ex.upstream, [a.addr for a in ex.upstream]) for ex in exchanges) == Counter(
        "" if line["upstream_addr"] in ("", "-") else line["upstream_addr"] for line in log)
    _assert_lines_match(exchanges, log)
    assert Counter(ex.tls for ex in exchanges) == Counter(line["https"] == "on" for line in log)


def test_half_sampled_exchanges_are_whole_or_summaries(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid, kernel_counts=False)
    assert cap.recorder.tracer.set_sampling(2)
    log, exchanges, _ = _mix_through(lab_nginx, cap, rounds=3)
    sampled = [ex for ex in exchanges if ex.summary_only]
    whole = [ex for ex in exchanges if ex not in sampled]
    assert len(exchanges) == len(log)
    assert sampled and whole, (len(sampled), len(whole))
    assert all(ex.kept_by == "sample" for ex in whole)
    _assert_lines_match(exchanges, log)
    by_id = {line["lab_id"]: line for line in log if line.get("lab_id")}
    for ex in whole:   # exchanges that kept their payload: paired by id, upstreams included
        line = by_id[lab_id(ex)]
        assert (ex.status, ex.response_bytes, ex.request_bytes) == (
            line["status"], line["bytes_sent"], line["request_length"]), ex.target
        logged = line["upstream_addr"] if line["upstream_addr"] not in ("", "-") else ""
        assert ", ".join(a.addr for a in ex.upstream) == logged, ex.target


def test_cpu_governor_samples_under_load_and_counts_everything(lab_nginx: LabNginx, capture_factory: Any) -> None:
    """A 1 % budget is exceeded by any real load: the governor must switch sampling on (a
    lifecycle event says so) while every logged request is still captured: as a row, or
    counted in the kernel (sampled out, no keep rule)."""
    start = lab_nginx.log_line_count()
    cap = capture_factory(pid=lab_nginx.master_pid, cpu_budget=0.01)
    url = f"http://127.0.0.1:{lab_nginx.plain_port}/static/small.txt"
    subprocess.run(["wrk", "-t1", "-c8", "-d3s", url], check=True, capture_output=True, timeout=60)
    lines = lab_nginx.log_line_count() - start
    cap.wait_for(lines, timeout=5)
    cap.stop()
    exchanges = list(cap.sink.exchanges)
    stats = cap.recorder.counters()
    events = list(cap.sink.events)
    steps = [ev.detail for ev in events if ev.kind == "sampling"]
    assert steps and steps[0].startswith("payload sampling 1 in "), steps
    assert stats["capture_cpu"] is not None
    # once wrk is done the load is gone: sampling ends at once rather than costing rows later
    assert stats["sample_one_in"] == 1 or not steps[-1].startswith("payload sampling off"), steps
    assert stats["sample_one_in"] > 1 or "too few for sampling" in steps[-1], steps
    assert len(exchanges) + stats["counted"]["requests"] == lines and stats["lost"] == 0
    assert stats["counted"]["requests"] > 0
    summaries = [ex for ex in exchanges if ex.summary_only]
    # sampled out and counted in the kernel (no rule keeps a 200), or (rarely, under this
    # load) shed under pressure: a summary row
    assert stats["shed_exchanges"] == len(summaries)
    # wrk's end leaves requests in flight: nginx logs each 200 with an empty
    # $request_completion, and the `aborted` rule keeps it whole (test_abort_truth)
    by_rule = [ex for ex in exchanges if not ex.summary_only and ex.kept_by not in ("sample", None)]
    assert all(ex.kept_by == "aborted" and "client went away" in (ex.error or "") for ex in by_rule), \
        [(ex.kept_by, ex.status, ex.error) for ex in by_rule]
    incomplete = sum(line.get("request_completion") != "OK" for line in lab_nginx.read_access_log()[start:])
    assert len(by_rule) <= incomplete, (len(by_rule), incomplete)   # a sampled-in one is "sample"
    assert all(ex.error is None for ex in summaries)
    assert all((ex.method, ex.target, ex.status) == ("GET", "/static/small.txt", 200) for ex in exchanges)
