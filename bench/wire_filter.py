"""The socket filter's cost per packet at saturation: wrk against the lab nginx without (A)
and with (B) the filter attached, A/B alternating in one run.

Prints per mode (plain / TLS, keep-alive / a new connection per request):
- req/s A and B (wrk, 1 thread on CPU 1; nginx 1 worker on CPU 0),
- the filter's run time per packet it examined (kernel.bpf_stats_enabled=1: run_time_ns /
  run_cnt of its program; on loopback every packet meets the filter twice, as sent and as
  received, and the sent copy is dropped first thing),
- packets examined and passed per request, and the user-space reader's CPU per request,
  for the reader as it is (`B`: header-only frames read with struct) and with every frame
  decoded by dpkt (`Bdpkt`: the reader before), alternating in the same run.

`--before APPDIR` adds `Bbefore`: the filter as another source tree has it (its bpf/wire.c) on
a loopback socket that also gets the sent copy of every packet (no PACKET_IGNORE_OUTGOING, as
before issue 15's kernel pass), alternating with `B` in the same run. Every row also gives
the nginx worker's CPU per request (the packet tap's clone and filter run partly in nginx's
sends).

Run as root: `.venv/bin/python bench/wire_filter.py --pairs 2 --seconds 5 [--dpkt] [--before DIR]`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, bpf_stats, cpu_seconds, pin_lab, prog_stats

from ngxscope.capture import wire as wire_mod
from ngxscope.decode.wire import parse_frame_dpkt
from ngxscope.lab.nginx import LabNginx
from ngxscope.pipeline.wirejoin import WireJoin


def wrk(url: str, seconds: float, close: bool) -> float:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds:g}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out)


_IGNORE_OUTGOING = wire_mod.WireCapture.__dict__["_ignore_outgoing"]


def measure_a(lab: LabNginx, url: str, seconds: float, close: bool) -> tuple[float, float]:
    """req/s and the worker's CPU µs per request with no filter."""
    worker = lab.worker_pids()[0]
    w0 = cpu_seconds(worker)
    rps = wrk(url, seconds, close)
    return rps, (cpu_seconds(worker) - w0) / (rps * seconds) * 1e6


def measure_b(lab: LabNginx, url: str, seconds: float, close: bool, dpkt_only: bool = False,
              before_tree: str | None = None) -> dict[str, Any]:
    join = WireJoin([f"127.0.0.1:{lab.plain_port}", f"127.0.0.1:{lab.tls_port}"])
    if dpkt_only:
        join.parse = parse_frame_dpkt
    source = wire_mod._bpf_source
    if before_tree:
        bpf_dir = Path(before_tree) / "ngxscope" / "bpf"
        text = (bpf_dir / "wire.c").read_text()
        if "wire_ports" not in text:  # the map today's WireCapture fills: unused there
            text += "\nBPF_ARRAY(wire_ports, __u64, 1024);\n"
        wire_mod._bpf_source = lambda: (text, str(bpf_dir))
        wire_mod.WireCapture._ignore_outgoing = staticmethod(lambda sock: None)  # type: ignore[method-assign]
    try:
        join.start()
    finally:
        wire_mod._bpf_source = source
        wire_mod.WireCapture._ignore_outgoing = _IGNORE_OUTGOING  # type: ignore[method-assign]
    worker = lab.worker_pids()[0]
    w0 = cpu_seconds(worker)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            join.pump(0.05)

    reader = threading.Thread(target=drain, daemon=True)
    before = prog_stats(os.getpid())
    reader.start()
    t0 = time.process_time()
    rps = wrk(url, seconds, close)
    stop.set()
    reader.join()
    cpu = time.process_time() - t0
    worker_cpu = cpu_seconds(worker) - w0
    after = prog_stats(os.getpid())
    c = join.capture.counters()
    join.stop()
    run_ns = sum(v["run_time_ns"] - before.get(k, {}).get("run_time_ns", 0) for k, v in after.items())
    run_cnt = sum(v["run_cnt"] - before.get(k, {}).get("run_cnt", 0) for k, v in after.items())
    requests = rps * seconds
    return {"rps": rps, "ns_per_packet": run_ns / run_cnt if run_cnt else 0.0,
            "filter_runs_per_req": run_cnt / requests, "passed_per_req": c["passed"] / requests,
            "seen": c["seen"], "passed": c["passed"], "retrans": c["retrans"],
            "reader_cpu_us_per_req": cpu / requests * 1e6, "worker_us_per_req": worker_cpu / requests * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--dpkt", action="store_true", help="also B with every frame decoded by dpkt (before)")
    ap.add_argument("--modes", default="plain,tls", help="plain,tls")
    ap.add_argument("--before", metavar="APPDIR", help="also B with that tree's filter, loopback's sent copies seen")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("wire_filter.py: needs root (eBPF)", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    with LabNginx(workers=1) as lab, bpf_stats():
        pin_lab(lab)
        chosen = [m for m in (("http", lab.plain_port), ("https", lab.tls_port))
                  if ("tls" if m[0] == "https" else "plain") in args.modes.split(",")]
        for scheme, port in chosen:
            url = f"{scheme}://127.0.0.1:{port}/health"
            for close in (False, True):
                mode = f"{'tls' if scheme == 'https' else 'plain'}, {'close' if close else 'keep-alive'}"
                for _ in range(args.pairs):
                    a, a_worker = measure_a(lab, url, args.seconds, close)
                    readers = ["Bdpkt"] if args.dpkt else []
                    readers += ["Bbefore"] if args.before else []
                    for reader in [*readers, "B"]:
                        b = measure_b(lab, url, args.seconds, close, dpkt_only=reader == "Bdpkt",
                                      before_tree=args.before if reader == "Bbefore" else None)
                        rows.append({"mode": mode, "reader": reader, "a_rps": a, "a_worker_us_per_req": a_worker, **b})
                        print(f"{mode:18} A {a:8.0f} req/s  {reader:7} {b['rps']:8.0f} req/s ({b['rps'] / a:4.0%})  "
                              f"filter {b['ns_per_packet']:6.0f} ns/packet  "
                              f"{b['filter_runs_per_req']:5.1f} runs/req  {b['passed_per_req']:5.2f} passed/req  "
                              f"reader {b['reader_cpu_us_per_req']:6.2f} us/req  "
                              f"worker {a_worker:5.1f} -> {b['worker_us_per_req']:5.1f} us/req  "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"wire_filter-{int(time.time())}.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
