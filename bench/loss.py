#!/usr/bin/env python3
"""Completeness against offered rate, and the rate where the first loss appears.

One `ngxscope record` per mode on the lab nginx (1 worker on CPU 0, wrk on CPU 1), then
steps of rising offered rate (wrk with a Lua delay(); 0 = saturation), 1 s apart. For each
step, from the session and the access log (by time window):
  counted   exchanges captured / requests nginx logged (every request counted?)
  payload   exchanges captured with their payload (no error) / logged
  shed      exchanges counted from the kernel summary only (payload shed under pressure)
The loss onset is the lowest offered rate whose payload completeness is below 100 %.

    .venv/bin/python bench/loss.py [--rates 5000 10000 15000 20000 25000 0] [--seconds 5]

Writes bench/results/loss.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    connections_for,
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[5000, 10000, 15000, 20000, 25000, 0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--modes", nargs="+", default=["plain", "tls"])
    ap.add_argument("--record-args", nargs="*", default=[])
    ap.add_argument("--out", default="loss")
    args = ap.parse_args()
    res: dict[str, Any] = {"machine": machine(), "seconds": args.seconds, "modes": {}}
    with LabNginx(workers=1) as lab:
        pin_lab(lab)
        for mode in args.modes:
            url = urls(lab)[mode]
            out = RESULTS / f"loss-{mode}.ngxs"
            out.unlink(missing_ok=True)
            proc = start_record(lab.master_pid, out, args.record_args)
            time.sleep(0.5)
            windows = []
            for rate in args.rates:
                start_line = lab.log_line_count()
                t0 = time.time()
                r = wrk(url, args.seconds, connections_for(rate) if rate else 50, rate=rate or None)
                time.sleep(1.0)
                t1 = time.time()
                windows.append((rate, t0, t1, start_line, lab.log_line_count(), r["rps"]))
            time.sleep(1.0)
            stop_record(proc)
            exchanges = [ex for ex in SessionReader(out).exchanges()]
            out.unlink(missing_ok=True)
            rows = []
            onset = None
            for rate, t0, t1, l0, l1, rps in windows:
                logged = l1 - l0
                got = [ex for ex in exchanges if t0 <= ex.end < t1]
                counted = len(got)
                with_payload = sum(1 for ex in got if ex.error is None and not ex.summary_only and ex.method)
                shed = sum(1 for ex in got if ex.summary_only)
                row = {"offered": rate or "saturation", "achieved_rps": rps, "logged": logged,
                       "counted": counted, "with_payload": with_payload, "shed": shed,
                       "counted_ratio": counted / logged if logged else 0.0,
                       "payload_ratio": with_payload / logged if logged else 0.0}
                if onset is None and row["payload_ratio"] < 0.999:  # window edges: ±1 request
                    onset = rps
                rows.append(row)
                print(f"{mode:5} offered {row['offered']!s:>10} achieved {rps:8.0f}/s  logged {logged:7}  "
                      f"counted {row['counted_ratio']:7.2%}  with payload {row['payload_ratio']:7.2%}  shed {shed}",
                      flush=True)
            res["modes"][mode] = {"steps": rows, "payload_loss_onset_rps": onset}
            print(f"{mode:5} first payload loss at {onset if onset else 'none up to saturation'} req/s")
    print(f"wrote {write_result(args.out, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
