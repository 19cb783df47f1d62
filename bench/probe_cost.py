#!/usr/bin/env python3
"""What one probe hit costs the traced thread on this machine: uprobe, uretprobe, syscall
tracepoint, each with a minimal BPF program (a pid filter), against the same loop unprobed.

A small C program (built here with cc) calls a non-inlined function with a `push rbp`
prologue, like nginx's ngx_* functions, N times, then makes N getppid(2) syscalls, and
prints the nanoseconds per iteration of each loop. It runs once bare and once per probe
kind; the difference is the cost of a hit. This is the floor under any uprobe design:
the capture cannot cost nginx less than (hits per request x cost per hit). The two "pair"
rows are a uprobe + uretprobe keeping the call's arguments from entry to return in a hash
as bpf/capture.c does: updated at the entry and deleted at the return, or a slot per thread
written in place (call_save / call_slot).

    .venv/bin/python bench/probe_cost.py [--iterations 2000000] [--repeat 3]

Prints a table and writes bench/results/probe_cost.json. Needs root (eBPF) and cc.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

__attribute__((noinline)) long probed_work(long x)
{
    volatile long v = x;   /* a real frame: push rbp; mov rbp, rsp, like nginx's functions */
    return v + 1;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = atol(argv[1]), acc = 0;
    getchar();   /* wait until the probes are attached */
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        acc += probed_work(i);
    double t1 = now_ns();
    for (long i = 0; i < n; i++)
        acc += syscall(SYS_getppid);
    double t2 = now_ns();
    printf("%.1f %.1f %ld\n", (t1 - t0) / n, (t2 - t1) / n, acc & 1);
    return 0;
}
"""

BPF_TEXT = r"""
#include <uapi/linux/ptrace.h>
BPF_ARRAY(hits, u64, 1);
static __always_inline int hit(void)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET)
        return 0;
    int zero = 0;
    u64 *v = hits.lookup(&zero);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}
int on_entry(struct pt_regs *ctx) { return hit(); }
int on_return(struct pt_regs *ctx) { return hit(); }
TRACEPOINT_PROBE(syscalls, sys_exit_getppid) { return hit(); }
"""

# A call's arguments kept from entry to return, as bpf/capture.c does (its `calls` map):
# a hash update at the entry and a lookup + delete at the return (before issue 15's kernel
# pass), or the thread's slot written in place and emptied by a flag (call_save/call_slot).
ARGS_TEXT = r"""
struct args { u64 c; u64 arg; s32 fd; u8 tls; u8 live; };
BPF_HASH(calls, u64, struct args, 16384);
static __always_inline int mine(void) { return (bpf_get_current_pid_tgid() >> 32) == TARGET; }
int save_update(struct pt_regs *ctx)
{
    if (!mine())
        return 0;
    u64 key = bpf_get_current_pid_tgid() ^ (1ULL << 56);
    struct args a = {.c = PT_REGS_PARM1(ctx), .live = 1};
    calls.update(&key, &a);
    return 0;
}
int take_delete(struct pt_regs *ctx)
{
    u64 key = bpf_get_current_pid_tgid() ^ (1ULL << 56);
    struct args *ap = calls.lookup(&key);
    if (!ap)
        return 0;
    struct args a = *ap;
    calls.delete(&key);
    return a.c == (u64)-1 ? 0 : hit();
}
int save_slot(struct pt_regs *ctx)
{
    if (!mine())
        return 0;
    u64 key = bpf_get_current_pid_tgid() ^ (1ULL << 56);
    struct args a = {.c = PT_REGS_PARM1(ctx), .live = 1};
    struct args *slot = calls.lookup(&key);
    if (slot)
        *slot = a;
    else
        calls.update(&key, &a);
    return 0;
}
int take_slot(struct pt_regs *ctx)
{
    u64 key = bpf_get_current_pid_tgid() ^ (1ULL << 56);
    struct args *ap = calls.lookup(&key);
    if (!ap || !ap->live)
        return 0;
    struct args a = *ap;
    ap->live = 0;
    return a.c == (u64)-1 ? 0 : hit();
}
"""

PAIR_UPDATE = "pair, args update+delete"
PAIR_SLOT = "pair, args slot in place"
KINDS = ("bare", "uprobe", "uprobe+uretprobe", PAIR_UPDATE, PAIR_SLOT, "tracepoint (syscall exit)")


def build(tmp: Path) -> Path:
    src, exe = tmp / "loop.c", tmp / "loop"
    src.write_text(PROGRAM)
    subprocess.run(["cc", "-O2", "-fno-omit-frame-pointer", "-o", str(exe), str(src)], check=True)
    return exe


def run_once(exe: Path, kind: str, n: int) -> tuple[float, float, int]:
    """(ns per function call, ns per syscall, BPF hits) with `kind` attached."""
    from bcc import BPF

    proc = subprocess.Popen([str(exe), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    bpf = None
    try:
        if kind != "bare":
            text = BPF_TEXT if kind.startswith("tracepoint") else BPF_TEXT.split("TRACEPOINT_PROBE")[0]
            if kind.startswith("pair"):
                text += ARGS_TEXT
            bpf = BPF(text=text, cflags=[f"-DTARGET={proc.pid}"])
            if kind.startswith("pair"):
                slot = kind == PAIR_SLOT
                bpf.attach_uprobe(name=str(exe), sym="probed_work", fn_name="save_slot" if slot else "save_update")
                bpf.attach_uretprobe(name=str(exe), sym="probed_work", fn_name="take_slot" if slot else "take_delete")
            if kind.startswith("uprobe"):
                bpf.attach_uprobe(name=str(exe), sym="probed_work", fn_name="on_entry")
            if kind == "uprobe+uretprobe":
                bpf.attach_uretprobe(name=str(exe), sym="probed_work", fn_name="on_return")
        proc.stdin.write("\n")
        proc.stdin.flush()
        out = proc.stdout.readline().split()
        proc.wait(timeout=300)
        hits = int(bpf["hits"][0].value) if bpf is not None else 0
        return float(out[0]), float(out[1]), hits
    finally:
        if bpf is not None:
            bpf.cleanup()
        if proc.poll() is None:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        rows: dict[str, dict[str, list[float]]] = {k: {"call_ns": [], "syscall_ns": []} for k in KINDS}
        for _ in range(args.repeat):   # interleaved: the machine's load drifts
            for kind in KINDS:
                call, sysc, hits = run_once(exe, kind, args.iterations)
                rows[kind]["call_ns"].append(call)
                rows[kind]["syscall_ns"].append(sysc)
                expected = {"bare": 0, "uprobe": 1, "uprobe+uretprobe": 2}.get(kind, 1) * args.iterations
                if hits < expected:
                    print(f"warning: {kind}: {hits} hits, expected {expected}", file=sys.stderr)
    base_call = statistics.median(rows["bare"]["call_ns"])
    base_sys = statistics.median(rows["bare"]["syscall_ns"])
    result: dict[str, object] = {"machine": machine(), "iterations": args.iterations, "kinds": {}}
    print(f"{'probe':28} {'ns/call':>9} {'ns/syscall':>11} {'cost per hit':>13}")
    for kind in KINDS:
        call = statistics.median(rows[kind]["call_ns"])
        sysc = statistics.median(rows[kind]["syscall_ns"])
        cost = sysc - base_sys if kind.startswith("tracepoint") else call - base_call
        result["kinds"][kind] = {"call_ns": call, "syscall_ns": sysc, "cost_ns": cost}  # type: ignore[index]
        print(f"{kind:28} {call:9.1f} {sysc:11.1f} {cost:10.0f} ns")
    print(f"wrote {write_result('probe_cost', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
