#!/usr/bin/env python3
"""Overhead of watching: nginx throughput under wrk without and with `ngxscope record`.

Alternates A (no capture) and B (capture attached) runs in one go, plain HTTP and TLS, on a
lab nginx with ONE worker pinned to CPU 0 and wrk pinned to CPU 1 (the capture process is
left to the scheduler). For the attached runs it also measures capture completeness: the
exchanges in the session against the lines nginx wrote to its access log meanwhile, and
the CPU the capture process and the nginx worker used per request.

    .venv/bin/python bench/overhead.py [--pairs 3] [--seconds 10] [--connections 50]
        [--variant NAME=APPDIR ...]   # also run B with another source tree (e.g. the old code)
        [--variant-args NAME="ARGS" ...]   # also run B with other record arguments
        [--record-args ...] [--pin-capture CPU]

Prints a table and writes bench/results/overhead.json. Needs root (eBPF) and wrk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    cpu_seconds,
    machine,
    pin_lab,
    start_record,
    stop_record,
    urls,
    write_result,
    wrk,
)

from ngxscope.lab.nginx import LabNginx
from ngxscope.store.session import SessionReader


def run(args: argparse.Namespace) -> dict[str, object]:
    variants: list[tuple[str, str | None, list[str]]] = [("B", None, [])]
    for v in args.variant:
        name, _, path = v.partition("=")
        variants.append((name, path, []))
    for v in args.variant_args:
        name, _, extra = v.partition("=")
        variants.append((name, None, extra.split()))
    results: dict[str, object] = {"machine": machine(), "seconds": args.seconds,
                                  "connections": args.connections, "record_args": args.record_args,
                                  "variants": [n for n, _, _ in variants], "modes": {}}
    with LabNginx(workers=1) as lab:
        pin_lab(lab)
        worker = lab.worker_pids()[0]
        for mode, url in urls(lab).items():
            if args.modes and mode not in args.modes:
                continue
            wrk(url, 2, args.connections)  # warm-up
            rows = []
            for i in range(args.pairs):
                c0, l0 = cpu_seconds(worker), lab.log_line_count()
                a = wrk(url, args.seconds, args.connections)["rps"]
                a_cpu = (cpu_seconds(worker) - c0) / max(1, lab.log_line_count() - l0)
                row: dict[str, object] = {"a_rps": a, "a_worker_us_per_req": a_cpu * 1e6}
                order = variants if i % 2 == 0 else list(reversed(variants))
                for name, path, extra in order:
                    out = RESULTS / f"overhead-{mode}-{i}-{name}.ngxs"
                    out.unlink(missing_ok=True)
                    env = {"PYTHONPATH": path} if path else None
                    proc = start_record(lab.master_pid, out, [*args.record_args, *extra], env=env)
                    if args.pin_capture is not None:
                        for task in os.listdir(f"/proc/{proc.pid}/task"):
                            os.sched_setaffinity(int(task), {args.pin_capture})
                    time.sleep(0.5)
                    before = lab.log_line_count()
                    cpu0, w0 = cpu_seconds(proc.pid), cpu_seconds(worker)
                    b = wrk(url, args.seconds, args.connections)["rps"]
                    w1 = cpu_seconds(worker)
                    time.sleep(1.0)
                    logged = lab.log_line_count() - before
                    cpu1 = cpu_seconds(proc.pid)
                    st = stop_record(proc)
                    captured = shed = 0
                    for ex in SessionReader(out).exchanges():
                        if ex.summary_only:
                            shed += 1  # counted from the kernel summary, payload not captured
                        elif ex.target == "/static/small.txt":
                            captured += 1
                    captured += shed
                    out.unlink(missing_ok=True)
                    row[name] = {"rps": b, "ratio": b / a, "logged": logged, "captured": captured,
                                 "completeness": captured / logged if logged else 0.0,
                                 "lost_events": st["lost_events"], "shed_exchanges": shed,
                                 "capture_cpu_s": cpu1 - cpu0,
                                 "capture_us_per_req": (cpu1 - cpu0) / logged * 1e6 if logged else None,
                                 "worker_us_per_req": (w1 - w0) / logged * 1e6 if logged else None}
                rows.append(row)
                desc = "  ".join(f"{n} {row[n]['rps']:8.0f} ({row[n]['ratio']:5.3f}, "  # type: ignore[index]
                                 f"{row[n]['captured']}/{row[n]['logged']}, {row[n]['shed_exchanges']} summary-only)"
                                 for n, _, _ in variants)
                print(f"{mode} pair {i + 1}: A {a:8.0f}  {desc}", flush=True)
            results["modes"][mode] = {  # type: ignore[index]
                "pairs": rows,
                **{f"{n}_median_ratio": statistics.median(r[n]["ratio"] for r in rows) for n, _, _ in variants},
                **{f"{n}_min_completeness": min(r[n]["completeness"] for r in rows) for n, _, _ in variants},
                **{f"{n}_median_capture_us": statistics.median(r[n]["capture_us_per_req"] or 0 for r in rows)
                   for n, _, _ in variants},
            }
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--modes", nargs="*", default=[], help="plain and/or tls (default both)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=APPDIR",
                    help="also measure record from another source tree (PYTHONPATH=APPDIR)")
    ap.add_argument("--variant-args", action="append", default=[], metavar="NAME=ARGS",
                    help='also measure record with these extra arguments, e.g. C="--cpu-budget 0"')
    ap.add_argument("--record-args", nargs="*", default=[], help="extra arguments for ngxscope record")
    ap.add_argument("--pin-capture", type=int, metavar="CPU",
                    help="pin the record process (all its threads) to this CPU (default: the scheduler)")
    ap.add_argument("--out", default="overhead", help="result file name under bench/results/")
    args = ap.parse_args()
    res = run(args)
    print()
    print(f"{'mode':6} {'var':7} {'A req/s':>9} {'B req/s':>9} {'B/A':>6} {'complete':>9} {'lost ev':>8} "
          f"{'cap us/req':>10} {'ngx us/req A->B':>16}")
    for mode, m in res["modes"].items():  # type: ignore[attr-defined]
        for r in m["pairs"]:
            for name in res["variants"]:  # type: ignore[attr-defined]
                b = r[name]
                print(f"{mode:6} {name:7} {r['a_rps']:9.0f} {b['rps']:9.0f} {b['ratio']:6.3f} {b['completeness']:9.4f} "
                      f"{b['lost_events']!s:>8} {b['capture_us_per_req'] or 0:10.1f} "
                      f"{r['a_worker_us_per_req']:7.1f}->{b['worker_us_per_req'] or 0:6.1f}")
        for name in res["variants"]:  # type: ignore[attr-defined]
            print(f"{mode:6} {name:7} median B/A {m[f'{name}_median_ratio']:.3f}, "
                  f"min completeness {m[f'{name}_min_completeness']:.4f}, "
                  f"median capture CPU {m[f'{name}_median_capture_us']:.1f} us/req")
    print(f"wrote {write_result(args.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
