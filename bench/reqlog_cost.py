#!/usr/bin/env python3
"""What the EV_REQ_LOG record (nginx's own $status, $request_length, $bytes_sent and request
line, read at ngx_http_free_request) costs per request: A/B in one run.

The lab nginx (1 worker) is captured twice, A with the record (the default on a build whose
request-struct offsets are known), B without it (Layout.request_log off: the probe is
compiled without it), under the same keep-alive load from a client process. Per request:

- kernel: the free_request probe's run time (bpf_stats: run_time_ns / run_cnt of
  free_request_enter, read with bpftool), A minus B;
- ring buffer: records per request (the record is 400 bytes, + 160 per upstream attempt, + 112
  for a unix listener, + the request line);
- user space: the capturing process's CPU time per request (ring reading, parsing, decoding,
  the check and apply of nginx's values), A minus B; and, apart from the noise of the whole
  capture, the parse + apply of one record in a loop.

    sudo PYTHONPATH=$PWD/app .venv/bin/python bench/reqlog_cost.py [--requests 20000] [--rounds 2] \
        [--path /api/items]   # a proxied path: nginx's upstream states are read too
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import ngxscope.pipeline.recorder as recorder_mod
from ngxscope.capture import events as ev
from ngxscope.capture import reqlog
from ngxscope.decode.nginxlog import NginxValues
from ngxscope.lab.nginx import LabNginx
from ngxscope.model import Exchange
from ngxscope.pipeline.recorder import Recorder
from ngxscope.pipeline.target import RecordOptions

CLIENT = textwrap.dedent("""
    import http.client, sys
    port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(n):
        conn.request("GET", f"{path}?i={i}")
        conn.getresponse().read()
""")


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def write_exchange(self, ex: Exchange) -> None:
        self.n += 1

    def write_event(self, e: Any) -> None:
        pass

    def write_stats(self, d: dict[str, Any]) -> None:
        pass


def _free_request_progs() -> dict[int, tuple[int, int]]:
    """Every loaded free_request program: id -> (run_time_ns, run_cnt)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.loads(out)
            if p.get("name", "").startswith("free_request_en")}


def _prog_stats(ours: set[int]) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of this capture's own program(s): other captures running on the
    machine load programs of the same name."""
    progs = _free_request_progs()
    return sum(progs[i][0] for i in ours if i in progs), sum(progs[i][1] for i in ours if i in progs)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(lab: LabNginx, with_log: bool, requests: int, path: str) -> dict[str, float]:
    real = recorder_mod.layout_for_binary
    if not with_log:
        recorder_mod.layout_for_binary = (  # type: ignore[assignment]
            lambda path, version: dataclasses.replace(real(path, version), request_log=False))
    before = set(_free_request_progs())
    try:
        sink = _Count()
        rec = Recorder(RecordOptions(pid=lab.master_pid, cpu_budget=0), [sink])
        rec.start()
    finally:
        recorder_mod.layout_for_binary = real  # type: ignore[assignment]
    assert rec.tracer.config.layout.request_log is with_log
    ours = set(_free_request_progs()) - before
    ns0, cnt0 = _prog_stats(ours)
    events0 = rec.counters()["events"]
    cpu0, t0 = _cpu(), time.monotonic()
    subprocess.run([sys.executable, "-c", CLIENT, str(lab.plain_port), str(requests), path], check=True)
    deadline = time.monotonic() + 30
    while sink.n < requests and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu1, t1 = _cpu(), time.monotonic()
    ns1, cnt1 = _prog_stats(ours)
    events1 = rec.counters()["events"]
    rec.stop("bench done")
    rec.join()
    runs = max(1, cnt1 - cnt0)
    return {"probe_ns": (ns1 - ns0) / runs, "records_per_request": (events1 - events0) / requests,
            "cpu_us_per_request": (cpu1 - cpu0) * 1e6 / requests, "seconds": t1 - t0,
            "exchanges": sink.n}


def parse_apply_us(states: int, loops: int = 200_000) -> float:
    """One EV_REQ_LOG record (with nginx's clock and `states` upstream states) parsed and its
    values applied to an exchange, in µs."""
    line = b"GET /health?i=1 HTTP/1.1"
    base = 0x7F0000001000
    strs = [len(line), base, 7, base + 4, 3, base + 12, 0, 0, 11, base + 4, 3, base, 8, base + 16]
    peer = b"\x02\x00\x1f\x90\x7f\x00\x00\x01".ljust(ev.SOCKADDR_MAX, b"\0")
    tail = reqlog._REQLOG_TAIL.pack(28, 180, 200, 0, base, *strs, 0x5000, 1, 0, b"/".ljust(reqlog.LOC_NAME_CAP, b"\0"),
                                16, peer, 1700000000, 250, 1700000000, 249,
                                reqlog.REQLOGF_CLOCK | reqlog.REQLOGF_STATES, states)
    ups = b"".join(reqlog._UPSTATE.pack(200, 14, 1, 0, 1, b"127.0.0.1:8081") for _ in range(states))
    buf = bytes(ev.HEADER_SIZE) + tail + ups + line
    values = NginxValues()
    ex = Exchange(id=1, start=0.0, end=0.0, pid=1, client="", server="", tls=False)
    t = time.perf_counter()
    for _ in range(loops):
        log = reqlog.parse_reqlog(buf, ev.HEADER_SIZE)
        values.apply(ex, log, 200, 180)
    return (time.perf_counter() - t) * 1e6 / loops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--path", default="/health", help="what the client asks for (/api/items: proxied)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("reqlog_cost: needs root (eBPF)", file=sys.stderr)
        return 2
    lab = LabNginx(workers=1)
    lab.start()
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for _ in range(args.rounds):
            for name, with_log in (("A", True), ("B", False)):
                results[name].append(one(lab, with_log, args.requests, args.path))
    finally:
        lab.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"{args.requests} keep-alive requests of {args.path} x {args.rounds} rounds, 1 worker (median of rounds)")
    print(f"{'':28} {'A: with EV_REQ_LOG':>20} {'B: without':>12} {'A - B':>10}")
    for key, label in (("probe_ns", "free_request probe, ns/call"), ("records_per_request", "ring records / request"),
                       ("cpu_us_per_request", "capture CPU, us/request"), ("seconds", "wall seconds")):
        a, b = med("A", key), med("B", key)
        print(f"{label:28} {a:20.2f} {b:12.2f} {a - b:10.2f}")
    print(f"parse + apply of one record (loop): {parse_apply_us(0):.2f} us; with one upstream state "
          f"{parse_apply_us(1):.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
