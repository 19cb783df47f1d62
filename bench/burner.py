#!/usr/bin/env python3
"""The floor of the overhead bench on a small machine: what ANY busy process costs nginx's
measured throughput, with no probe at all.

Same set-up as overhead.py (one nginx worker pinned to CPU 0, wrk pinned to CPU 1), A/B in
one run: A = nothing else running, B = a pure-Python busy loop pinned to CPU 1 (where wrk
runs, like a capture process the scheduler puts there). It shows how much of overhead.py's
B/A comes from the capture process's CPU use rather than from the probes in nginx.

    .venv/bin/python bench/burner.py [--pairs 2] [--seconds 5]

Prints a table and writes bench/results/burner.json. Needs wrk.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, machine, pin_lab, urls, write_result, wrk

from ngxscope.lab.nginx import LabNginx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--connections", type=int, default=50)
    args = ap.parse_args()
    result: dict[str, object] = {"machine": machine(), "seconds": args.seconds, "modes": {}}
    with LabNginx(workers=1) as lab:
        pin_lab(lab)
        worker = lab.worker_pids()[0]
        for mode, url in urls(lab).items():
            wrk(url, 2, args.connections)
            rows = []
            for _ in range(args.pairs):
                row: dict[str, float] = {}
                for burn in (False, True):
                    burner = None
                    if burn:
                        burner = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
                        time.sleep(0.3)
                    c0, l0 = cpu_seconds(worker), lab.log_line_count()
                    rps = wrk(url, args.seconds, args.connections)["rps"]
                    n = max(1, lab.log_line_count() - l0)
                    key = "b" if burn else "a"
                    row[f"{key}_rps"] = rps
                    row[f"{key}_worker_us_per_req"] = (cpu_seconds(worker) - c0) / n * 1e6
                    if burner is not None:
                        burner.kill()
                        burner.wait()
                row["ratio"] = row["b_rps"] / row["a_rps"]
                rows.append(row)
                print(f"{mode}: A {row['a_rps']:8.0f} req/s ({row['a_worker_us_per_req']:.1f} us/req in nginx)  "
                      f"B (busy loop on CPU 1) {row['b_rps']:8.0f} ({row['b_worker_us_per_req']:.1f} us/req)  "
                      f"B/A {row['ratio']:.3f}", flush=True)
            result["modes"][mode] = {"pairs": rows,  # type: ignore[index]
                                     "median_ratio": statistics.median(r["ratio"] for r in rows)}
    for mode, m in result["modes"].items():  # type: ignore[attr-defined]
        print(f"{mode}: median B/A with a busy loop and no probes: {m['median_ratio']:.3f}")
    print(f"wrote {write_result('burner', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
