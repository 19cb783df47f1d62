#!/usr/bin/env python3
"""What watching a saturated nginx costs, side by side with its peers (issue 15's table).

One lab nginx worker pinned to CPU 0 answering `return 200` (/health), wrk -t1 -c20 pinned to
CPU 1, at saturation. Per round, in turn: nothing attached, `ngxscope record` (default CPU
budget), and the peer: `tcpdump -i lo -s0 -w FILE` for plain HTTP, bcc's sslsniff for TLS
(libssl uprobes, raw text to a file; Debian's sslsniff-bpfcc needs its min() call rewritten
as a ternary to compile here: a patched temporary copy is run, never kept). Throughput
relative to nothing attached in the same round; medians of the rounds. For `record` also
the CPU split per request: BPF run time, the nginx worker's CPU growth (traps + BPF + what the
machine's neighbours cost it), the capture process, and whether every request was counted
(rows + counted in the kernel = access-log lines).

kernel.bpf_stats_enabled is off while throughput and CPU are measured: with it on, every BPF
program run also reads the clock twice and updates per-CPU counters, a cost no user pays.
The BPF run time per request comes from a second, shorter wrk run right after
(`--stats-seconds`, same attach) with the statistics on.

    .venv/bin/python bench/peers.py [--rounds 3] [--seconds 8] [--modes plain tls]
                                    [--record-args ...] [--variant NAME=ARGS ...]
                                    [--variant NAME@APPDIR=ARGS ...] [--stats-seconds 3]
                                    [--floor]

`--floor` adds a column of empty bpftrace programs at record's attach points (`FLOOR`) and a
drop-all packet socket on lo: what the traps, program dispatch and packet delivery alone
cost (needs bpftrace); `--floor-split` adds the same without the packet socket.

A tool that is not installed prints "not installed" and its column is skipped. Writes
bench/results/peers.json. Needs root, wrk; tcpdump and bpfcc-tools for the peer columns.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    bpf_stats,
    cpu_seconds,
    machine,
    pin_lab,
    prog_delta,
    prog_names,
    prog_stats,
    start_record,
    urls,
    write_result,
    wrk,
)

from ngxscope.capture.wire import WireCapture
from ngxscope.lab.nginx import LabNginx
from ngxscope.model import Exchange
from ngxscope.store.session import SessionReader

SSLSNIFF = "/usr/sbin/sslsniff-bpfcc"
_MIN_CALL = "min((size_t)MAX_BUF_SIZE, (size_t)len)"
_TERNARY = "((size_t)len < (size_t)MAX_BUF_SIZE ? (size_t)len : (size_t)MAX_BUF_SIZE)"


def _wait_line(proc: subprocess.Popen[str], words: tuple[str, ...], timeout: float = 60.0) -> None:
    """Read the tool's stderr until it says it is ready (one of `words`)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    said: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if any(w in line for w in words):
            return
        if line:
            said.append(line.rstrip())
        elif proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {' / '.join(said[-3:])}")
    raise RuntimeError(f"{proc.args[0]} not ready after {timeout:g} s")


class Tcpdump:
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "lo.pcap"
        self.proc = subprocess.Popen(["tcpdump", "-i", "lo", "-s0", "-w", str(self.path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_line(self.proc, ("listening on",))
        self.pid = self.proc.pid

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        m = re.search(r"(\d+) packets captured", err or "")
        size = self.path.stat().st_size if self.path.exists() else 0
        self.path.unlink(missing_ok=True)
        return {"packets": int(m.group(1)) if m else None, "bytes": size}


class Sslsniff:
    def __init__(self, tmp: Path, pid: int) -> None:
        text = Path(SSLSNIFF).read_text()
        if _MIN_CALL not in text:
            raise RuntimeError("sslsniff: the min() call to patch is not where it was (bcc changed)")
        script = tmp / "sslsniff.py"
        script.write_text(text.replace(_MIN_CALL, _TERNARY))
        self.out = tmp / "sslsniff.txt"
        self.fh = self.out.open("w")
        # -p: only nginx's worker (the uprobes are on libssl for every process)
        self.proc = subprocess.Popen(["/usr/bin/python3", str(script), "-p", str(pid)],
                                     stdout=self.fh, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        # sslsniff prints its column header on stdout once attached: wait for the file
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.fh.flush()
            if self.out.stat().st_size > 0:
                return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"sslsniff exited with {self.proc.returncode}: {err[-300:]}")
            time.sleep(0.2)
        raise RuntimeError("sslsniff did not attach in 90 s")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.fh.close()
        size = self.out.stat().st_size
        self.out.unlink(missing_ok=True)
        return {"bytes": size}


# record's attach points per mode (app/ngxscope/capture/tracer.py, bpf/syscalls.c,
# bpf/processes.c), each with an empty program: what the traps and program dispatch cost
# before any of record's work; with a packet socket on lo whose filter drops everything
# (what the socket filter costs before its own work: capture/wire.py's socket, same options)
_FLOOR_COMMON = [
    "tracepoint:syscalls:sys_exit_recvfrom", "tracepoint:syscalls:sys_exit_writev",
    "tracepoint:syscalls:sys_exit_sendfile64", "tracepoint:syscalls:sys_exit_epoll_wait",
    "uprobe:{nginx}:ngx_http_free_request", "uprobe:{nginx}:ngx_close_connection",
    "uprobe:{nginx}:ngx_http_init_connection", "uprobe:{nginx}:ngx_http_upstream_init",
]
FLOOR = {
    "plain": _FLOOR_COMMON,
    "tls": [*_FLOOR_COMMON, "uprobe:{nginx}:ngx_ssl_recv", "uretprobe:{nginx}:ngx_ssl_recv",
            "uprobe:{nginx}:ngx_ssl_write"],   # entry only (bpf/capture.c ssl_write_enter)
}


def _drop_all_packet_socket() -> socket.socket:
    """AF_PACKET on lo, sent copies ignored (PACKET_IGNORE_OUTGOING), a classic BPF filter
    `ret #0`: every received packet runs a filter and is dropped."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))   # ETH_P_ALL
    WireCapture._ignore_outgoing(sock)   # as record's own loopback socket
    insn = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))   # BPF_RET|BPF_K 0
    sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HxxxxxxQ", 1, ctypes.addressof(insn)))  # SO_ATTACH_FILTER
    sock.bind(("lo", 0))
    return sock


class Floor:
    """bpftrace with an empty program at each of record's attach points (`FLOOR`), and a
    packet socket on lo that drops every packet."""

    def __init__(self, mode: str, binary: str, sock: bool = True) -> None:
        self.sock = _drop_all_packet_socket() if sock else None
        script = " ".join(p.format(nginx=binary) + " {}" for p in FLOOR[mode])
        self.proc = subprocess.Popen(["bpftrace", "-e", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("Attaching"):
                time.sleep(0.5)   # "Attaching" is printed before the last attach
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"bpftrace exited with {self.proc.returncode}")
        raise RuntimeError("bpftrace did not attach in 60 s")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=60)
        if self.sock is not None:
            self.sock.close()
        return {}


class Record:
    def __init__(self, tmp: Path, master: int, extra: list[str], env: dict[str, str] | None = None) -> None:
        self.path = tmp / "rec.ngxs"
        self.proc = start_record(master, self.path, extra, env)
        self.pid = self.proc.pid

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=600)
        m = re.search(r"(\d+) events lost", err)
        out: dict[str, Any] = {"lost_events": int(m.group(1)) if m else None, "rows": 0, "counted": 0,
                               "sample_one_in": 1}
        # requests only: a connection that never became a request is a record too
        for rec in SessionReader(self.path).iter_records():
            if isinstance(rec, Exchange):
                out["rows"] += rec.conn_outcome is None
            elif isinstance(rec, dict) and rec.get("t") == "stats":
                out["counted"] = int((rec.get("counted") or {}).get("requests") or 0)
                out["sample_one_in"] = max(out["sample_one_in"], int(rec.get("sample_one_in") or 1))
        self.path.unlink(missing_ok=True)
        return out


def _attach(kind: str, lab: Any, tmp: Path, extra: list[str], env: dict[str, str] | None) -> Any:
    if kind.startswith("floor-"):
        mode, _, nosock = kind.removeprefix("floor-").partition("-")
        return Floor(mode, lab.nginx_bin, sock=not nosock)
    if kind == "tcpdump":
        return Tcpdump(tmp)
    if kind == "sslsniff":
        return Sslsniff(tmp, lab.worker_pids()[0])
    return Record(tmp, lab.master_pid, extra, env)


def _bpf_pass(lab: Any, url: str, seconds: float, pid: int) -> dict[str, float]:
    """BPF run time per request (all the tool's programs, and per program name) over a wrk
    run of `seconds` with kernel.bpf_stats_enabled on."""
    with bpf_stats():
        l0, p0 = lab.log_line_count(), prog_stats(pid)
        wrk(url, seconds, 20)
        p1 = prog_stats(pid)
    time.sleep(0.3)
    n = max(1, lab.log_line_count() - l0)
    d = prog_delta(p0, p1)
    progs: dict[str, list[float]] = {}
    for pid_, name in prog_names(list(d)).items():
        us, runs = progs.setdefault(name, [0.0, 0.0])
        progs[name] = [us + d[pid_]["run_time_ns"] / n / 1000, runs + d[pid_]["run_cnt"] / n]
    return {"bpf_us": sum(v["run_time_ns"] for v in d.values()) / n / 1000,
            "bpf_progs": {k: v for k, v in progs.items() if v[1]}}


def one_run(lab: Any, url: str, seconds: float, kind: str, tmp: Path, extra: list[str],
            stats_seconds: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    worker = lab.worker_pids()[0]
    l_attach = lab.log_line_count()
    tool = None if kind == "none" else _attach(kind, lab, tmp, extra, env)
    if tool is not None:
        time.sleep(1.0)   # attached and settled (the CPU governor's first second)
    l0, w0 = lab.log_line_count(), cpu_seconds(worker)
    t0 = cpu_seconds(tool.pid) if tool is not None else 0.0
    r = wrk(url, seconds, 20)
    w1 = cpu_seconds(worker)
    t1 = cpu_seconds(tool.pid) if tool is not None else 0.0
    time.sleep(0.5)
    n = max(1, lab.log_line_count() - l0)
    out: dict[str, Any] = {"rps": r["rps"], "requests": n, "worker_us": (w1 - w0) / n * 1e6,
                           "tool_us": (t1 - t0) / n * 1e6}
    if isinstance(tool, Record) and stats_seconds > 0:
        out.update(_bpf_pass(lab, url, stats_seconds, tool.pid))
    if tool is not None:
        total = lab.log_line_count()
        out["tool"] = tool.stop()
        if isinstance(tool, Record):
            out["logged_while_attached"] = total - l_attach
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--modes", nargs="+", default=["plain", "tls"])
    ap.add_argument("--record-args", nargs="*", default=[])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[@APPDIR]=ARGS",
                    help="also run `record ARGS` as column NAME (e.g. 'nobudget=--cpu-budget 0'); "
                         "with @APPDIR, the record of another source tree (PYTHONPATH=APPDIR), "
                         "e.g. 'before@/tmp/before/app=' for a before/after in one run")
    ap.add_argument("--stats-seconds", type=float, default=3,
                    help="after each record run, a wrk run this long with kernel.bpf_stats_enabled on "
                         "for the BPF run time per request (0: no BPF figure); throughput and CPU are "
                         "measured with the statistics off")
    ap.add_argument("--floor", action="store_true",
                    help="also a column of empty bpftrace programs at record's attach points and a "
                         "packet socket on lo that drops every packet: the traps', dispatch's and "
                         "packet delivery's share of record's cost")
    ap.add_argument("--floor-split", action="store_true",
                    help="with --floor, also the floor without the packet socket (column floornosock)")
    ap.add_argument("--out", default="peers")
    args = ap.parse_args()
    os.environ.pop("NGXSCOPE_CPU_BUDGET", None)   # record's default budget, as a user runs it
    peers = {"plain": "tcpdump", "tls": "sslsniff"}
    installed = {"tcpdump": shutil.which("tcpdump") is not None, "sslsniff": os.path.exists(SSLSNIFF)}
    variants = {"record": args.record_args}
    trees: dict[str, dict[str, str]] = {}
    for v in args.variant:
        name, _, extra = v.partition("=")
        name, _, tree = name.partition("@")
        variants[name] = extra.split()
        if tree:
            trees[name] = {"PYTHONPATH": tree}
    res: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(), "seconds": args.seconds,
                           "rounds": args.rounds, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="ngxscope-peers-") as tmpdir, \
            LabNginx(workers=1) as lab:
        tmp = Path(tmpdir)
        pin_lab(lab)
        for mode in args.modes:
            url = urls(lab, "/health")[mode]
            wrk(url, 2, 20)   # warm-up
            kinds = ["none", *variants]
            if args.floor and shutil.which("bpftrace"):
                kinds += ["floor", "floornosock"] if args.floor_split else ["floor"]
            elif args.floor:
                print(f"{mode}: bpftrace not installed: the floor column is skipped", flush=True)
            peer = peers[mode]
            if installed[peer]:
                kinds.append(peer)
            else:
                print(f"{mode}: {peer} not installed: its column is skipped", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for rnd in range(args.rounds):
                order = kinds if rnd % 2 == 0 else [kinds[0], *reversed(kinds[1:])]
                for kind in order:
                    extra = variants.get(kind, [])
                    kind_ = ("record" if kind in variants else f"floor-{mode}" if kind == "floor"
                             else f"floor-{mode}-nosock" if kind == "floornosock" else kind)
                    try:
                        r = one_run(lab, url, args.seconds, kind_, tmp, extra, args.stats_seconds,
                                    trees.get(kind))
                    except RuntimeError as exc:
                        print(f"{mode} {kind}: {exc}", flush=True)
                        continue
                    runs[kind].append(r)
                    print(f"{mode:5} round {rnd + 1} {kind:9} {r['rps']:9.0f} req/s  worker {r['worker_us']:5.1f} "
                          f"us/req  tool {r['tool_us']:5.1f} us/req" + (f"  BPF {r['bpf_us']:.2f} us/req"
                                                                       if "bpf_us" in r else ""), flush=True)
            res["modes"][mode] = _summary(runs)
    res["load_after"] = os.getloadavg()
    _print(res)
    print(f"wrote {write_result(args.out, res)}")
    return 0


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    base = runs["none"]
    out: dict[str, Any] = {"none_rps": [r["rps"] for r in base], "columns": {}}
    for kind, rs in runs.items():
        if kind == "none" or not rs:
            continue
        ratios = [r["rps"] / a["rps"] for r, a in zip(rs, base, strict=False) if a["rps"]]
        col: dict[str, Any] = {"ratio": statistics.median(ratios) if ratios else None, "ratios": ratios,
                               "rps": [r["rps"] for r in rs],
                               "tool_us": statistics.median(r["tool_us"] for r in rs),
                               "worker_growth_us": statistics.median(
                                   r["worker_us"] - a["worker_us"] for r, a in zip(rs, base, strict=False))}
        if "bpf_us" in rs[0]:
            col["bpf_us"] = statistics.median(r["bpf_us"] for r in rs)
            names = {name for r in rs for name in r.get("bpf_progs", {})}
            col["bpf_progs"] = {name: [statistics.median(r.get("bpf_progs", {}).get(name, [0, 0])[i] for r in rs)
                                       for i in (0, 1)] for name in names}
        if "logged_while_attached" in rs[0]:
            col["counted_of_logged"] = [(r["tool"]["rows"] + r["tool"]["counted"], r["logged_while_attached"])
                                        for r in rs]
            col["rows"] = [r["tool"]["rows"] for r in rs]
            col["sample_one_in"] = [r["tool"]["sample_one_in"] for r in rs]
        out["columns"][kind] = col
    return out


def _print(res: dict[str, Any]) -> None:
    print(f"\nload average before {res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f} "
          f"({res['rounds']} rounds of {res['seconds']:g} s, medians)")
    print(f"{'mode':6}{'attached':12}{'throughput':>11}{'req/s':>10}{'BPF us':>8}{'worker +us':>11}"
          f"{'tool us':>9}{'total us':>9}  complete (rows+counted / logged)")
    for mode, m in res["modes"].items():
        none = statistics.median(m["none_rps"]) if m["none_rps"] else 0
        print(f"{mode:6}{'nothing':12}{1.0:>11.3f}{none:>10.0f}")
        for kind, c in m["columns"].items():
            total = max(0.0, c["worker_growth_us"]) + c["tool_us"]
            bpf = f"{c['bpf_us']:>8.2f}" if "bpf_us" in c else f"{'-':>8}"
            done = ", ".join(f"{a}/{b}" for a, b in c.get("counted_of_logged", []))
            ratio = f"{c['ratio']:>11.3f}" if c["ratio"] is not None else f"{'-':>11}"
            print(f"{mode:6}{kind:12}{ratio}{statistics.median(c['rps']):>10.0f}{bpf}"
                  f"{c['worker_growth_us']:>11.1f}{c['tool_us']:>9.1f}{total:>9.1f}  {done}")
        for kind, c in m["columns"].items():
            progs = sorted(c.get("bpf_progs", {}).items(), key=lambda kv: -kv[1][0])
            if progs:   # where the BPF time goes: us per request (runs per request)
                print(f"{'':6}{kind:12}BPF by program: " + ", ".join(
                    f"{name} {us:.2f} ({runs:.1f})" for name, (us, runs) in progs if us >= 0.005))


if __name__ == "__main__":
    raise SystemExit(main())
