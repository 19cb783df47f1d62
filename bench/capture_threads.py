#!/usr/bin/env python3
"""The capture process's CPU per thread once the load has settled, µs per request.

`peers.py` measures the capture process from the moment wrk starts, so its figure includes
the CPU governor's first steps (every exchange decoded until the first step, then the
backlog already in the ring). This one lets the load run `--settle` seconds first, then
reads each thread's user+system CPU (/proc/PID/task) over `--seconds`: the steady state.
The threads are listed in the order they were made (main first, then the recorder's
capture, decode and watch threads). One nginx worker on CPU 0, wrk on CPU 1, as peers.py.

    .venv/bin/python bench/capture_threads.py [--mode plain|tls] [--settle 2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import pin_lab, start_record, urls, wrk

from ngxscope.lab.nginx import LabNginx

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """tid -> user + system CPU seconds, for every thread of pid."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("plain", "tls"), default="plain")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of load before measuring")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ngxscope-threads-") as tmp, LabNginx(workers=1) as lab:
        pin_lab(lab)
        url = urls(lab, "/health")[args.mode]
        wrk(url, 2, 20)   # warm-up
        proc = start_record(lab.master_pid, Path(tmp) / "rec.ngxs")
        time.sleep(1.0)
        done: dict[str, Any] = {}
        load = threading.Thread(target=lambda: done.update(wrk(url, args.settle + args.seconds + 1, 20)))
        load.start()
        time.sleep(args.settle)
        l0, before = lab.log_line_count(), thread_cpu(proc.pid)
        time.sleep(args.seconds)
        after, l1 = thread_cpu(proc.pid), lab.log_line_count()
        load.join()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    n = max(1, l1 - l0)
    print(f"{args.mode}: {n} requests in {args.seconds:g} s ({n / args.seconds:,.0f}/s), "
          f"after {args.settle:g} s of load")
    total = 0.0
    for tid in sorted(after):
        used = after[tid] - before.get(tid, 0.0)
        total += used
        print(f"  thread {tid}: {used / n * 1e6:6.2f} us/req  {used / args.seconds:6.1%} of a core")
    print(f"  all: {total / n * 1e6:6.2f} us/req  {total / args.seconds:6.1%} of a core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
