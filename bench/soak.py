#!/usr/bin/env python3
"""Soak: `ngxscope record` attached to a lab nginx at a fixed rate for a long time; is the
recorder's memory flat?

Load: wrk at a fixed total rate (default 2,000 req/s: 2/3 plain static files, 1/3 TLS
through the upstream group, keep-alive) plus a Python client opening a new connection per
request (plain and TLS, 20/s) so per-connection state is created and freed all the time.
Every `--interval` seconds it samples the recorder's RSS, its CPU, the requests nginx logged
(the access log is counted and truncated each time, so it never grows) and the exchanges
the recorder reports; prints a table; writes JSON (bench/results/soak.json).

    .venv/bin/python bench/soak.py [--minutes 60] [--rate 2000] [--interval 10] [--json PATH]
        [--stream]    # record --stream to a pipe instead of a session file (no disk growth)

Verdict: the RSS slope over the second half of the run (MiB per hour) and the growth from
the first sample after warm-up to the last. Needs root (eBPF) and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import NGXSCOPE, RESULTS, cpu_seconds, machine, urls, wrk

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic, TrafficError


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx * 3600


def churn(lab: LabNginx, stop: threading.Event, per_s: float) -> None:
    """A new connection per request: open, one request, close (plain and TLS, upstream too)."""
    traffic = Traffic(lab.plain_port, lab.tls_port)
    paths = ["/static/page.html", "/api/items?id=4", "/health", "/no/such", "/api/chunked?n=3"]
    i = 0
    start = time.monotonic()
    while not stop.is_set():
        try:
            traffic.request(i % 2 == 1, "GET", paths[i % len(paths)])
        except (OSError, TrafficError):
            pass
        i += 1
        traffic.records.clear()  # the generator's own bookkeeping must not grow either
        stop.wait(max(0.0, start + i / per_s - time.monotonic()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="total requests per second")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--json", default=str(RESULTS / "soak.json"))
    ap.add_argument("--stream", action="store_true", help="record --stream to a pipe, no session file")
    args = ap.parse_args()
    seconds = args.minutes * 60
    churn_rate = 20.0
    wrk_rate = max(10.0, args.rate - churn_rate)
    tmp = Path(tempfile.mkdtemp(prefix="ngxscope-soak-"))
    samples: list[dict[str, Any]] = []
    with LabNginx(workers=2) as lab:
        out = tmp / "soak.ngxs"
        cmd = [*NGXSCOPE, "record", "--pid", str(lab.master_pid)]
        cmd += ["--stream"] if args.stream else ["-o", str(out)]
        rec = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        assert rec.stderr is not None
        while "capturing" not in (line := rec.stderr.readline()):
            if not line:
                raise SystemExit(f"record exited: {rec.wait()}")
        stop = threading.Event()
        u_plain = urls(lab, "/static/small.txt")["plain"]
        u_tls = urls(lab, "/api/items?id=1")["tls"]
        results: dict[str, Any] = {}

        def run_wrk(name: str, url: str, rate: float) -> None:
            # wrk waits `delay` (whole ms) after each response: ~4 ms + the service time
            # per request and connection, so about rate x 4.5 ms connections
            conns = max(1, min(200, round(rate * 0.0045)))
            results[name] = wrk(url, seconds, conns, rate=rate)

        threads = [
            threading.Thread(target=run_wrk, args=("plain", u_plain, wrk_rate * 2 / 3), daemon=True),
            threading.Thread(target=run_wrk, args=("tls", u_tls, wrk_rate / 3), daemon=True),
            threading.Thread(target=churn, args=(lab, stop, churn_rate), daemon=True),
        ]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        logged = 0
        cpu0 = cpu_seconds(rec.pid)
        print(f"{'t (s)':>7} {'RSS MiB':>9} {'req/s':>8} {'logged':>10} {'rec CPU %':>9}")
        last_t, last_cpu, last_logged = 0.0, cpu0, 0
        try:
            while True:
                now = time.monotonic() - t0
                if now >= seconds:
                    break
                time.sleep(min(args.interval, seconds - now))
                now = time.monotonic() - t0
                data = lab.access_log_path.read_bytes()
                logged += data.count(b"\n")
                os.truncate(lab.access_log_path, 0)  # nginx appends (O_APPEND): it never grows
                cpu = cpu_seconds(rec.pid)
                if rec.poll() is not None:
                    raise SystemExit(f"record exited early: {rec.stderr.read()}")
                sample = {
                    "t": round(now, 1),
                    "rss_mib": round(rss_mib(rec.pid), 2),
                    "rate": round((logged - last_logged) / max(1e-6, now - last_t), 1),
                    "logged": logged,
                    "cpu_pct": round((cpu - last_cpu) / max(1e-6, now - last_t) * 100, 1),
                }
                samples.append(sample)
                last_t, last_cpu, last_logged = now, cpu, logged
                print(f"{sample['t']:>7.0f} {sample['rss_mib']:>9.1f} {sample['rate']:>8.0f} "
                      f"{sample['logged']:>10} {sample['cpu_pct']:>9.1f}", flush=True)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            rec.send_signal(signal.SIGINT)
            try:
                _, err = rec.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                rec.kill()
                _, err = rec.communicate()
    summary_line = err.strip().splitlines()[-1] if err.strip() else ""
    warm = [s for s in samples if s["t"] >= min(60.0, seconds / 3)] or samples
    half = samples[len(samples) // 2:]
    result = {
        "machine": machine(),
        "minutes": args.minutes,
        "target_rate": args.rate,
        "achieved_rate": round(samples[-1]["logged"] / samples[-1]["t"], 1) if samples else 0,
        "samples": samples,
        "rss_first_mib": samples[0]["rss_mib"] if samples else None,
        "rss_after_warmup_mib": warm[0]["rss_mib"] if warm else None,
        "rss_last_mib": samples[-1]["rss_mib"] if samples else None,
        "rss_max_mib": max(s["rss_mib"] for s in samples) if samples else None,
        "rss_slope_second_half_mib_per_hour": round(slope_per_hour([(s["t"], s["rss_mib"]) for s in half]), 2),
        "session_bytes": out.stat().st_size if out.exists() else None,
        "wrk": results,
        "record_summary": summary_line,
    }
    if out.exists():
        out.unlink()
    tmp.rmdir()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    growth = (result["rss_last_mib"] or 0) - (result["rss_after_warmup_mib"] or 0)
    print(f"achieved {result['achieved_rate']} req/s; RSS {result['rss_first_mib']} -> "
          f"{result['rss_last_mib']} MiB (after warm-up {result['rss_after_warmup_mib']}, max "
          f"{result['rss_max_mib']}); growth after warm-up {growth:+.1f} MiB; slope over the second half "
          f"{result['rss_slope_second_half_mib_per_hour']:+.1f} MiB/h")
    print(f"record: {summary_line}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
