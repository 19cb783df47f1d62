#!/usr/bin/env python3
"""What one BPF helper costs on this machine, as bpf_stats counts it (run_time_ns / run_cnt):
tracepoint programs on cheap syscalls this script calls N times, each program doing one
thing more than the empty one. The probes' per-hit figures in cost.py are sums of these.

Run as root: `.venv/bin/python bench/bpf_primitives.py --calls 200000`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys

PROG = r"""
struct big { u8 d[4096]; };
struct k32 { u64 a, b; u32 c; u16 d; u8 e, f; };
BPF_HASH(h, u32, u64, 1024);
BPF_TABLE("lru_hash", u64, u64, lru, 4096);
BPF_PERCPU_HASH(ph, struct k32, u64, 4096);
BPF_ARRAY(bigs, struct big, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_getuid) { MINE return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_getgid) { MINE u64 t = bpf_ktime_get_ns(); return t == 1; }
TRACEPOINT_PROBE(syscalls, sys_enter_geteuid) { MINE u64 kk = k; u64 *v = lru.lookup(&kk); if (!v) { u64 z = 0; lru.update(&kk, &z); } return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_getegid) { MINE struct k32 kk = {}; kk.a = k; u64 z = 0; u64 *v = ph.lookup_or_try_init(&kk, &z); if (v) *v += 1; return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_getpgrp) { MINE u64 b = 0; bpf_probe_read_user(&b, 8, (void *)ADDR); return b == 1; }
TRACEPOINT_PROBE(syscalls, sys_enter_getsid) { MINE u8 b[128]; bpf_probe_read_user(b, 128, (void *)ADDR); return b[3]; }
TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) { MINE int z = 0; struct big *b = bigs.lookup(&z); if (!b) return 0; bpf_probe_read_user(b->d, 1280, (void *)ADDR); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_getpriority) { MINE int z = 0; struct big *b = bigs.lookup(&z); if (!b) return 0; bpf_probe_read_user(b->d, 2048, (void *)ADDR); return 0; }
"""

CASES = [  # syscall, what its program does
    ("getppid", "nothing (the floor: dispatch + bpf_stats' own clock reads)"),
    ("getuid", "one hash lookup (u32 key)"),
    ("getgid", "hash lookup + bpf_ktime_get_ns"),
    ("geteuid", "hash lookup + LRU hash lookup (u64 key)"),
    ("getegid", "hash lookup + per-CPU hash lookup_or_try_init (24-byte key)"),
    ("getpgrp", "hash lookup + bpf_probe_read_user 8 B"),
    ("getsid", "hash lookup + bpf_probe_read_user 128 B"),
    ("getpgid", "hash lookup + bpf_probe_read_user 1280 B (into a map value)"),
    ("getpriority", "hash lookup + bpf_probe_read_user 2048 B (into a map value)"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bpf_primitives: needs root (eBPF)", file=sys.stderr)
        return 2
    from bcc import BPF  # root-only dependency: imported after the check

    buf = ctypes.create_string_buffer(b"x" * 4096)
    mine = "u32 k = bpf_get_current_pid_tgid() >> 32; if (!h.lookup(&k)) return 0;"   # bcc: no map calls in macros
    b = BPF(text=PROG.replace("ADDR", f"{ctypes.addressof(buf)}ULL").replace("MINE", mine))
    b["h"][b["h"].Key(os.getpid())] = b["h"].Leaf(0)
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        was = f.read().strip()
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        for name, _ in CASES:
            fn = getattr(libc, name)
            call = (lambda fn=fn: fn(0, 0)) if name == "getpriority" else (
                (lambda fn=fn: fn(0)) if name in ("getsid", "getpgid") else fn)
            for _ in range(args.calls):
                call()
        progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                                          check=True).stdout)
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(was)
    by_name = {p.get("name", ""): p for p in progs if p.get("run_cnt")}
    floor = None
    print(f"{'program does':62} {'ns/run':>7} {'over floor':>10}")
    for name, what in CASES:
        p = next((v for k, v in by_name.items() if k.endswith(f"sys_enter_{name}")), None)
        if p is None:
            print(f"{what:62} {'-':>7}")
            continue
        ns = p["run_time_ns"] / p["run_cnt"]
        floor = ns if floor is None else floor
        print(f"{what:62} {ns:7.0f} {ns - floor:10.0f}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
