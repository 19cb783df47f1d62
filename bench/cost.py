#!/usr/bin/env python3
"""CPU cost of watching, per 1,000 requests, at fixed offered rates and at saturation.

For each mode (plain, TLS) and rate (default 1k/s, 10k/s, saturation) on the lab nginx (1
worker on CPU 0, wrk on CPU 1; fixed rates via a wrk Lua delay()):
  - A: the nginx worker's CPU (user+sys from /proc) per request without capture;
  - B: with `ngxscope record`: the worker's CPU per request again (its growth is the
    in-nginx cost: probe traps + BPF programs), the capture process's CPU (user+sys) per
    request, and the in-kernel BPF run time per program (kernel.bpf_stats_enabled=1,
    run_time_ns/run_cnt from /proc/PID/fdinfo of the record process's program fds, names
    from bpftool) with hits per request.

    .venv/bin/python bench/cost.py [--rates 1000 10000 0] [--seconds 8] [--modes plain tls]
                                   [--variant NAME=APPDIR] [--paths compiled pure variant] [--rounds N]
                                   [--workers N]

Rate 0 means saturation (wrk, 50 connections, no delay). Writes bench/results/cost.json.
--paths compiled pure: B is measured once per path and round, alternating: `compiled` (the
C extensions, when built) and `pure` (NGXSCOPE_PURE_PYTHON=1, the pure-Python reference);
`variant` (with --variant): the other tree's compiled path, alternating with this tree's.
--workers N: the lab nginx's worker count (all pinned to CPU 0; worker CPU is their sum).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    bpf_stats,
    connections_for,
    cpu_seconds,
    machine,
    pin_lab,
    prog_delta,
    prog_names,
    prog_stats,
    start_record,
    stop_record,
    urls,
    write_result,
    wrk,
)

from ngxscope.lab.nginx import LabNginx


def load(url: str, rate: float, seconds: float) -> dict[str, float]:
    if rate:
        return wrk(url, seconds, connections_for(rate), rate=rate)
    return wrk(url, seconds, 50)


def measure(lab: Any, url: str, rate: float, seconds: float, rec_pid: int | None) -> dict[str, Any]:
    workers = lab.worker_pids()
    l0, w0 = lab.log_line_count(), sum(cpu_seconds(w) for w in workers)
    c0 = cpu_seconds(rec_pid) if rec_pid else 0.0
    p0 = prog_stats(rec_pid) if rec_pid else {}
    r = load(url, rate, seconds)
    w1 = sum(cpu_seconds(w) for w in workers)
    time.sleep(1.0)  # let the capture drain
    n = max(1, lab.log_line_count() - l0)
    out: dict[str, Any] = {"offered": rate or "saturation", "rps": r["rps"], "requests": n,
                           "worker_us_per_req": (w1 - w0) / n * 1e6}
    if rec_pid:
        out["capture_us_per_req"] = (cpu_seconds(rec_pid) - c0) / n * 1e6
        d = prog_delta(p0, prog_stats(rec_pid))
        names = prog_names(list(d))
        progs = {names[k]: {"hits_per_req": v["run_cnt"] / n,
                            "ns_per_hit": v["run_time_ns"] / v["run_cnt"] if v["run_cnt"] else 0.0,
                            "ns_per_req": v["run_time_ns"] / n}
                 for k, v in d.items() if v["run_cnt"]}
        out["bpf"] = progs
        out["bpf_ns_per_req"] = sum(p["ns_per_req"] for p in progs.values())
    return out


def measure_b(lab: Any, url: str, rate: float, args: argparse.Namespace, mode: str, a: dict[str, Any],
              env: dict[str, str], path: str) -> dict[str, Any]:
    out = RESULTS / f"cost-{mode}.ngxs"
    out.unlink(missing_ok=True)
    proc = start_record(lab.master_pid, out, args.record_args, env=env)
    time.sleep(0.5)
    b = measure(lab, url, rate, args.seconds, proc.pid)
    st = stop_record(proc)
    out.unlink(missing_ok=True)
    row = {"offered": a["offered"], "path": path, "a": a, "b": b, "lost_events": st["lost_events"],
           "shed": st["shed"], "in_nginx_us_per_req": b["worker_us_per_req"] - a["worker_us_per_req"]}
    row["total_us_per_req"] = b["capture_us_per_req"] + max(0.0, row["in_nginx_us_per_req"])
    print(f"{mode:5} {a['offered']!s:>10} {path:8}: A {a['rps']:8.0f}/s B {b['rps']:8.0f}/s  "
          f"capture {b['capture_us_per_req']:6.1f} us/req  in-nginx +{row['in_nginx_us_per_req']:5.1f} "
          f"us/req  BPF {b['bpf_ns_per_req']:7.0f} ns/req  total {row['total_us_per_req']:6.1f} us/req  "
          f"shed {st['shed']}/{b['requests']}  load {os.getloadavg()[0]:.2f}", flush=True)
    for name, p in sorted(b["bpf"].items(), key=lambda kv: -kv[1]["ns_per_req"]):
        print(f"        {name:24} {p['hits_per_req']:5.2f} hits/req {p['ns_per_hit']:7.0f} ns/hit "
              f"{p['ns_per_req']:7.0f} ns/req")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[1000, 10000, 0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--modes", nargs="+", default=["plain", "tls"])
    ap.add_argument("--variant", default="", metavar="NAME=APPDIR", help="record from another source tree")
    ap.add_argument("--record-args", nargs="*", default=[])
    ap.add_argument("--out", default="cost")
    ap.add_argument("--paths", nargs="+", default=["compiled"], choices=["compiled", "pure", "variant"],
                    help="measure B with the compiled hot path and/or the pure-Python one, alternating")
    ap.add_argument("--rounds", type=int, default=1, help="B measurements per path and rate")
    ap.add_argument("--workers", type=int, default=1, help="nginx worker processes of the lab")
    args = ap.parse_args()
    base_env: dict[str, str] = {}
    variant_env: dict[str, str] = {}
    if args.variant:
        variant_env["PYTHONPATH"] = args.variant.partition("=")[2]
        if "variant" not in args.paths:
            base_env = variant_env   # every B from the other tree
    elif "variant" in args.paths:
        ap.error("--paths variant needs --variant NAME=APPDIR")
    res: dict[str, Any] = {"machine": machine(), "seconds": args.seconds, "variant": args.variant,
                           "workers": args.workers,
                           "paths": args.paths, "load_before": os.getloadavg(), "modes": {}}
    with LabNginx(workers=args.workers) as lab, bpf_stats():
        pin_lab(lab)
        for mode in args.modes:
            url = urls(lab)[mode]
            wrk(url, 2, 50)  # warm-up
            rows = []
            for rate in args.rates:
                a = measure(lab, url, rate, args.seconds, None)
                for _ in range(args.rounds):
                    for path in args.paths:
                        env = {**(variant_env if path == "variant" else base_env),
                               "NGXSCOPE_PURE_PYTHON": "1" if path == "pure" else "0"}
                        rows.append(measure_b(lab, url, rate, args, mode, a, env, path))
            res["modes"][mode] = rows
    print("per 1,000 requests: multiply the per-request figures by 1,000 (µs -> ms).")
    print(f"wrote {write_result(args.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
