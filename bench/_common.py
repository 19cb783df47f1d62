"""Shared pieces of the bench scripts: the lab nginx pinned to CPU 0, wrk on CPU 1 (optionally
rate-limited with a Lua `delay()`), `ngxscope record` as a subprocess, CPU seconds from /proc,
and per-program BPF run time (kernel.bpf_stats_enabled + /proc/PID/fdinfo + bpftool names).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NGXSCOPE = [sys.executable, "-m", "ngxscope"]
TICK = os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    subprocess.run(["taskset", "-pc", str(cpu), str(pid)], check=False, capture_output=True)


def pin_lab(lab: Any) -> None:
    pin(lab.master_pid, 0)
    for w in lab.worker_pids():
        pin(w, 0)


def urls(lab: Any, path: str = "/static/small.txt") -> dict[str, str]:
    return {"plain": f"http://127.0.0.1:{lab.plain_port}{path}",
            "tls": f"https://127.0.0.1:{lab.tls_port}{path}"}


_DELAY_LUA = """
local d = {delay}
function delay() return d end
"""


def wrk(url: str, seconds: float, connections: int, rate: float | None = None) -> dict[str, float]:
    """Run wrk on CPU 1; with `rate`, each connection waits so the total is about `rate`/s
    (wrk's Lua delay() between a response and the next request). Returns rps and latency."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    script = None
    if rate:
        # per-connection period minus a typical service time; wrk delays are whole ms
        delay = max(1, round(connections / rate * 1000))
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115 - wrk reads it later
        script.write(_DELAY_LUA.format(delay=delay))
        script.close()
        cmd += ["-s", script.name]
    try:
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    finally:
        if script is not None:
            os.unlink(script.name)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    total = re.search(r"(\d+) requests in", out)
    return {"rps": float(m.group(1)), "requests": int(total.group(1)) if total else 0}


def connections_for(rate: float) -> int:
    """wrk connections for a target rate with whole-millisecond delays."""
    return max(1, min(200, round(rate / 1000 * 2)))  # 2 ms period per connection


def start_record(master: int, out: Path, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    out.parent.mkdir(parents=True, exist_ok=True)   # bench/results is not in a fresh clone
    proc = subprocess.Popen([*NGXSCOPE, "record", "--pid", str(master), "-o", str(out), *(extra or [])],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    said: list[str] = []
    while True:
        line = proc.stderr.readline()
        if "capturing" in line:
            return proc
        if line:
            said.append(line.rstrip())
        if not line and proc.poll() is not None:
            raise RuntimeError(f"record exited with {proc.returncode}: {' / '.join(said[-3:])}")


def stop_record(proc: subprocess.Popen[str]) -> dict[str, int | None]:
    """SIGINT, wait, and the final counters `record` prints."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    out: dict[str, int | None] = {}
    m = re.search(r"(\d+) events lost, (\d+) payloads truncated", err)
    out["lost_events"] = int(m.group(1)) if m else None
    m = re.search(r"(\d+) counted from kernel summaries", err)
    out["shed"] = int(m.group(1)) if m else 0
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the duration (restored afterwards)."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    old = Path(path).read_text().strip()
    Path(path).write_text("1")
    try:
        yield
    finally:
        Path(path).write_text(old)


def prog_stats(pid: int) -> dict[int, dict[str, int]]:
    """prog_id -> {run_time_ns, run_cnt} for every BPF program fd the process holds."""
    out: dict[int, dict[str, int]] = {}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf-prog":
                continue
            info = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                        if ":" in line)
        except OSError:
            continue
        pid_ = int(info.get("prog_id", "0").strip())
        out[pid_] = {"run_time_ns": int(info.get("run_time_ns", "0")), "run_cnt": int(info.get("run_cnt", "0"))}
    return out


def prog_names(ids: list[int]) -> dict[int, str]:
    try:
        data = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                         text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return {i: str(i) for i in ids}
    names = {p["id"]: p.get("name", str(p["id"])) for p in data}
    return {i: names.get(i, str(i)) for i in ids}


def prog_delta(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    return {k: {f: v[f] - before.get(k, {}).get(f, 0) for f in v} for k, v in after.items()}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "kernel": os.uname().release, "cpu": model,
            "host": os.uname().nodename, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
