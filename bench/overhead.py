#!/usr/bin/env python3
"""Overhead of watching: nginx throughput under wrk without and with `ngxscope record`.

Alternates A (no capture) and B (capture attached) runs in one go, plain HTTP and TLS, on a
lab nginx with ONE worker pinned to CPU 0 and wrk pinned to CPU 1 (the capture process is
left to the scheduler). For the attached runs it also measures capture completeness: the
exchanges in the session against the lines nginx wrote to its access log meanwhile.

    .venv/bin/python bench/overhead.py [--pairs 3] [--seconds 10] [--connections 50]

Prints a table and writes bench/results/overhead.json. Needs root (eBPF) and wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ngxscope.lab.nginx import LabNginx
from ngxscope.store.session import SessionReader

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NGXSCOPE = [sys.executable, "-m", "ngxscope"]


def pin(pid: int, cpu: int) -> None:
    subprocess.run(["taskset", "-pc", str(cpu), str(pid)], check=False, capture_output=True)


def wrk(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return float(m.group(1))


def start_record(master: int, out: Path, extra: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*NGXSCOPE, "record", "--pid", str(master), "-o", str(out), *extra],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        if "capturing" in line:
            return proc
        if not line and proc.poll() is not None:
            raise RuntimeError(f"record exited with {proc.returncode}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
                                  "seconds": args.seconds, "connections": args.connections, "modes": {}}
    with LabNginx(workers=1) as lab:
        pin(lab.master_pid, 0)
        for w in lab.worker_pids():
            pin(w, 0)
        for mode, url in (("plain", f"http://127.0.0.1:{lab.plain_port}/static/small.txt"),
                          ("tls", f"https://127.0.0.1:{lab.tls_port}/static/small.txt")):
            wrk(url, 2, args.connections)  # warm-up
            rows = []
            for i in range(args.pairs):
                a = wrk(url, args.seconds, args.connections)
                out = RESULTS / f"overhead-{mode}-{i}.ngxs"
                out.unlink(missing_ok=True)
                proc = start_record(lab.master_pid, out, args.record_args)
                time.sleep(0.5)
                before = lab.log_line_count()
                cpu0 = cpu_seconds(proc.pid)
                b = wrk(url, args.seconds, args.connections)
                time.sleep(1.0)
                logged = lab.log_line_count() - before
                cpu1 = cpu_seconds(proc.pid)
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=300)
                captured = sum(1 for ex in SessionReader(out).exchanges() if ex.target == "/static/small.txt")
                stats = re.search(r"(\d+) events lost, (\d+) payloads truncated", err)
                rows.append({"a_rps": a, "b_rps": b, "ratio": b / a, "logged": logged, "captured": captured,
                             "completeness": captured / logged if logged else 0.0,
                             "lost_events": int(stats.group(1)) if stats else None,
                             "capture_cpu_s": cpu1 - cpu0})
                out.unlink(missing_ok=True)
                print(f"{mode} pair {i + 1}: A {a:9.0f} req/s  B {b:9.0f} req/s  ratio {b / a:5.3f}  "
                      f"captured {captured}/{logged}", flush=True)
            results["modes"][mode] = {  # type: ignore[index]
                "pairs": rows,
                "median_ratio": statistics.median(r["ratio"] for r in rows),
                "min_completeness": min(r["completeness"] for r in rows),
            }
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--record-args", nargs="*", default=[], help="extra arguments for ngxscope record")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = run(args)
    print()
    print(f"{'mode':6} {'A req/s':>10} {'B req/s':>10} {'B/A':>6} {'complete':>9} {'lost ev':>8} {'cap CPU s':>9}")
    for mode, m in res["modes"].items():  # type: ignore[attr-defined]
        for r in m["pairs"]:
            print(f"{mode:6} {r['a_rps']:10.0f} {r['b_rps']:10.0f} {r['ratio']:6.3f} {r['completeness']:9.4f} "
                  f"{r['lost_events']!s:>8} {r['capture_cpu_s']:9.2f}")
        print(f"{mode:6} median B/A {m['median_ratio']:.3f}, min completeness {m['min_completeness']:.4f}")
    (RESULTS / "overhead.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {RESULTS / 'overhead.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
