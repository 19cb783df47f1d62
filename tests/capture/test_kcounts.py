"""Sampled-out exchanges counted in the kernel equal nginx's access log, exactly.

Under wrk load with every exchange sampled out (sampling 1 in 2**30), the only rows are the
exchanges a keep rule kept at their completion (5xx, 499/444/408, 400, failed upstream
attempts, slower than --keep-slower-than); every other request must be in the kernel's
per-second aggregates: per worker and $status, with $request_length and $bytes_sent summed,
the upstream peer named as $upstream_addr names it, and each request's $request_time (and
its last $upstream_response_time) in the histogram bucket the Python mirror computes.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from collections import Counter
from typing import Any

from ngxscope.capture.kcounts import hist_bucket
from ngxscope.lab.nginx import LabNginx
from ngxscope.store.kcounted import parse_counted
from ngxscope.store.summary import summarize

SLOW_MS = 40.0


def _failed_upstream(line: dict[str, Any]) -> bool:
    statuses = [s.strip() for s in str(line.get("upstream_status") or "").split(",") if s.strip()]
    if not statuses or statuses == ["-"]:
        return False
    return len(statuses) > 1 or any(not s.isdigit() or int(s) >= 500 for s in statuses)


def kept_by(line: dict[str, Any], slow_ms: float) -> set[str]:
    """The keep rules (events.KEEP_NAMES) an access-log line meets."""
    status = int(line["status"])
    why = set()
    if status >= 500:
        why.add("error")
    if status in (499, 444, 408) or (status < 400 and line.get("request_completion") != "OK"):
        why.add("aborted")   # or a client that went away in the middle of the response
    if status == 400:
        why.add("malformed")
    if _failed_upstream(line):
        why.add("upstream")
    if round(float(line["request_time"]) * 1000) * 1000 > slow_ms * 1000:
        why.add("slow")
    return why


def _specials(port: int, stop: threading.Event, sent: list[str]) -> None:
    """Requests the keep rules are about, on one keep-alive connection, while wrk runs."""
    paths = ["/fail/500", "/fail/503", "/slow/x?ms=60", "/flaky/a", "/flaky/b", "/api/x", "/static/small.txt",
             "/nothing-here", "/fail/404"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while not stop.is_set() and i < 400:
        path = paths[i % len(paths)]
        conn.request("GET", path)
        conn.getresponse().read()
        sent.append(path)
        i += 1
    conn.close()


def _last(field: str, line: dict[str, Any]) -> str:
    return str(line.get(field) or "").split(",")[-1].strip()


def test_kernel_counts_equal_the_access_log(lab_nginx: LabNginx, capture_factory: Any) -> None:
    start = lab_nginx.settled_line_count()   # nothing of an earlier test still in flight
    cap = capture_factory(pid=lab_nginx.master_pid, cpu_budget=0, keep_slower_than_ms=SLOW_MS)
    assert cap.recorder.kcounts is not None, "the lab nginx's request layout is known: counting must be on"
    assert cap.recorder.tracer.set_sampling(1 << 30)
    stop, sent = threading.Event(), []
    side = threading.Thread(target=_specials, args=(lab_nginx.plain_port, stop, sent))
    side.start()
    url = f"http://127.0.0.1:{lab_nginx.plain_port}/health"
    subprocess.run(["wrk", "-t1", "-c8", "-d3s", url], check=True, capture_output=True, timeout=60)
    stop.set()
    side.join()
    total = lab_nginx.settled_line_count() - start   # the requests in flight at wrk's end too
    log = lab_nginx.wait_log_lines(total, start=start)
    kept_lines = [ln for ln in log if kept_by(ln, SLOW_MS)]
    cap.wait_for(len(kept_lines), timeout=30)
    cap.stop()
    stats = cap.recorder.counters()
    counted = stats["counted"]
    rows = list(cap.sink.exchanges)
    assert stats["lost"] == 0
    assert total > 2000 and len(kept_lines) > 20, (total, len(kept_lines))

    # a connection whose requests were all counted had requests all the same: the socket
    # filter's "closed before a request" records are only for connections nginx logged nothing of
    logged_clients = {ln["client"] for ln in log}
    lying = [(c.client, c.error) for c in cap.sink.connections if c.client in logged_clients]
    assert not lying, lying

    # every request is a row or counted, and the rows are exactly the kept lines
    assert counted["requests"] + len(rows) == len(log), (counted["requests"], len(rows), len(log))
    assert Counter((ex.status, ex.response_bytes) for ex in rows) == Counter(
        (ln["status"], ln["bytes_sent"]) for ln in kept_lines)
    # each row says which rules kept it, as the log says
    want_rules = Counter(tuple(sorted(kept_by(ln, SLOW_MS))) for ln in kept_lines)
    got_rules = Counter(tuple(sorted((ex.kept_by or "").split(","))) for ex in rows)
    assert got_rules == want_rules

    # the counts: per worker and status, sizes summed, peers named as nginx names them
    counted_lines = [ln for ln in log if not kept_by(ln, SLOW_MS)]
    want: Counter[tuple[int, int, str]] = Counter()
    want_len: Counter[tuple[int, int, str]] = Counter()
    want_sent: Counter[tuple[int, int, str]] = Counter()
    for ln in counted_lines:
        k = (ln["pid"], ln["status"], _last("upstream_addr", ln) if ln.get("upstream_addr") not in (None, "", "-") else "")
        want[k] += 1
        want_len[k] += ln["request_length"]
        want_sent[k] += ln["bytes_sent"]
    got: Counter[tuple[int, int, str]] = Counter()
    got_len: Counter[tuple[int, int, str]] = Counter()
    got_sent: Counter[tuple[int, int, str]] = Counter()
    for row in counted["rows"]:
        assert row["server"] == "localhost", row
        k = (row["pid"], row["status"], row["peer"] or "")
        got[k] += row["n"]
        got_len[k] += row["request_length"]
        got_sent[k] += row["bytes_sent"]
    assert got == want
    assert got_len == want_len
    assert got_sent == want_sent

    # each counted request's $request_time (and last $upstream_response_time) in its bucket
    want_hist: Counter[tuple[int, int, str, int]] = Counter()
    for ln in counted_lines:
        cls = ln["status"] // 100
        want_hist[(ln["pid"], cls, "request", hist_bucket(round(float(ln["request_time"]) * 1000) * 1000))] += 1
        up = _last("upstream_response_time", ln)
        if up not in ("", "-"):
            want_hist[(ln["pid"], cls, "upstream", hist_bucket(round(float(up) * 1000) * 1000))] += 1
    got_hist: Counter[tuple[int, int, str, int]] = Counter()
    for h in counted["hist"]:
        for b, n in h["buckets"].items():
            got_hist[(h["pid"], h["class"], h["which"], int(b))] += n
    assert got_hist == want_hist

    # what `ngxscope stats` shows: rows and counts together, as the log
    summary = summarize(rows, counted=parse_counted(counted))
    assert summary.requests == len(log) and summary.counted == counted["requests"]
    log_classes = Counter(f"{ln['status'] // 100}xx" for ln in log)
    assert {c: n for c, n in summary.classes.items() if n} == dict(log_classes)
    assert summary.response_bytes == sum(ln["bytes_sent"] for ln in log)
    assert {w.pid: w.requests for w in summary.workers} == dict(Counter(ln["pid"] for ln in log))


def test_counts_stay_exact_while_the_sampling_changes(lab_nginx: LabNginx, capture_factory: Any) -> None:
    """The governor moves the sampling every half second; here it moves every 30 ms through
    on, off and several rates while wrk's connections come and go (each wrk run ends with
    requests in flight): every request is still a row or counted, once, plain and TLS, and
    no connection that had requests becomes a "closed before a request" record."""
    start = lab_nginx.settled_line_count()   # nothing of an earlier test still in flight
    cap = capture_factory(pid=lab_nginx.master_pid, cpu_budget=0)
    tracer = cap.recorder.tracer
    stop = threading.Event()
    moves: list[int] = []

    def move() -> None:
        rates = [1, 2, 16, 4, 1, 1024, 8]
        while not stop.wait(0.03):
            moves.append(rates[len(moves) % len(rates)])
            tracer.set_sampling(moves[-1])

    mover = threading.Thread(target=move)
    mover.start()
    try:
        for url in (f"http://127.0.0.1:{lab_nginx.plain_port}/static/small.txt",
                    f"https://127.0.0.1:{lab_nginx.tls_port}/health") * 2:
            subprocess.run(["wrk", "-t1", "-c16", "-d1s", url], check=True, capture_output=True, timeout=60)
    finally:
        stop.set()
        mover.join()
    total = lab_nginx.settled_line_count() - start   # the requests in flight at wrk's end too
    log = lab_nginx.wait_log_lines(total, start=start)
    time.sleep(0.5)
    cap.stop()
    stats = cap.recorder.counters()
    rows = list(cap.sink.exchanges)
    assert stats["lost"] == 0 and len(moves) > 50
    assert total > 4000 and len(rows) > 100 and stats["counted"]["requests"] > 1000, (total, len(rows))
    if len(rows) + stats["counted"]["requests"] != len(log):   # which requests: by connection and status
        per_conn = Counter((r.client, r.server) for r in rows)
        logged_per_conn = Counter((ln["client"], ln["server"]) for ln in log)
        statuses = Counter(r.status for r in rows)
        for row in stats["counted"]["rows"]:
            statuses[row["status"]] += row["n"]
        raise AssertionError(f"{len(rows)} rows + {stats['counted']['requests']} counted != {len(log)} logged; "
                             f"by status {statuses} vs {Counter(ln['status'] for ln in log)}; "
                             f"{len(logged_per_conn)} connections logged, {len(per_conn)} with rows; "
                             f"EV_COUNTED total {cap.recorder.assembler.stats.counted}; "
                             f"{ {k: stats[k] for k in ('gaps', 'malformed', 'shed', 'sampled', 'open_conns')} }")
    # a connection is its client and server address: wrk's client ports repeat between
    # the plain and the TLS port (the kernel picks ephemeral ports per destination)
    logged = {(ln["client"], ln["server"]) for ln in log}
    lying = [(c.client, c.server, c.conn_outcome, c.start, c.end) for c in cap.sink.connections
             if (c.client, c.server) in logged]
    assert not lying, (lying, f"EV_COUNTED of unknown connections: {cap.recorder.assembler.stats.counted_unjoined}",
                       [(ln["client"], ln["server"], ln["msec"]) for ln in log
                        if (ln["client"], ln["server"]) in {x[:2] for x in lying}][:6])
