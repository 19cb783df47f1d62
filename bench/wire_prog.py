#!/usr/bin/env python3
"""The socket filter program alone, per packet kind, with no traffic around it: each
filter (this tree's bpf/wire.c and, with --before, another tree's) is loaded with the same
listening address and connection state, and the kernel runs it on one synthetic frame N
times (BPF_PROG_TEST_RUN, which reports the mean run time). Unlike wire_filter.py this is
not blurred by the machine's other loopback traffic; it does not see what the kernel does
around the filter (the sent copy's clone on loopback, which PACKET_IGNORE_OUTGOING avoids:
wire_filter.py measures that).

Frames (Ethernet + IPv4 + TCP, 127.0.0.1, nginx listening on :8080; the connection is in
the filter's flow map, in state SYN_SEEN so the repeated segment is never taken for a
retransmission):
  to nginx, data     client :40000 -> :8080, 100 bytes of a request
  from nginx, data   :8080 -> :40000, 200 bytes of a response
  from nginx, ACK    :8080 -> :40000, no payload
  other, data        :5555 -> :6666, 100 bytes (a connection nginx has nothing to do with)
  to nginx, SYN      client :40001 -> :8080 (passes: its headers, 54 bytes)

    .venv/bin/python bench/wire_prog.py [--runs 1000000] [--repeat 5] [--before APPDIR]

Needs root (eBPF). Prints ns per run (median of --repeat) per frame and filter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from ngxscope.capture import wire as wire_mod

_PORT, _CLIENT_PORT = 8080, 40000
_ACK, _PSH, _SYN = 0x10, 0x08, 0x02


def frame(sport: int, dport: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    # test runs of a socket filter start it past an Ethernet header the kernel pulls
    # (eth_type_trans) where a packet socket's starts at it: a second one goes in front
    eth = bytes(12) + b"\x08\x00"
    return eth + eth + ip + tcp + payload


FRAMES = {
    "to nginx, data": frame(_CLIENT_PORT, _PORT, _ACK | _PSH, b"GET /health HTTP/1.1\r\n".ljust(100, b"x")),
    "from nginx, data": frame(_PORT, _CLIENT_PORT, _ACK | _PSH, b"HTTP/1.1 200 OK\r\n".ljust(200, b"x")),
    "from nginx, ACK": frame(_PORT, _CLIENT_PORT, _ACK, b""),
    "other, data": frame(5555, 6666, _ACK | _PSH, b"x" * 100),
    "to nginx, SYN": frame(_CLIENT_PORT + 1, _PORT, _SYN, b""),
}


def load(bpf_dir: Path) -> Any:
    """That tree's filter, listening on 127.0.0.1:_PORT, the data frames' connection followed
    (its SYN run once through the filter itself, whatever the tree keeps its flows in)."""
    bpf, fd = wire_mod.load_filter([f"127.0.0.1:{_PORT}"], ((bpf_dir / "wire.c").read_text(), str(bpf_dir)))
    wire_mod.run_filter(fd, frame(_CLIENT_PORT, _PORT, _SYN, b""))
    return bpf, fd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", metavar="APPDIR", help="also the filter of that tree (its ngxscope/bpf)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("wire_prog.py: needs root (eBPF)", file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parent.parent / "bpf"
    trees = {"now": here}
    if args.before:
        trees["before"] = Path(args.before) / "ngxscope" / "bpf"
    progs = {name: load(path) for name, path in trees.items()}
    times: dict[str, dict[str, list[float]]] = {f: {t: [] for t in trees} for f in FRAMES}
    kept: dict[str, dict[str, int]] = {f: {} for f in FRAMES}
    for _ in range(args.repeat):   # interleaved: the machine's load drifts
        for fname, data in FRAMES.items():
            for tname, (_bpf, fd) in progs.items():
                ret, ns = wire_mod.run_filter(fd, data, args.runs)
                times[fname][tname].append(ns)
                kept[fname][tname] = ret
    print(f"{'frame':20} " + " ".join(f"{t + ' ns/run':>16}" for t in trees) + "   bytes kept")
    result: dict[str, Any] = {"runs": args.runs, "load": os.getloadavg(), "frames": {}}
    for fname in FRAMES:
        med = {t: statistics.median(v) for t, v in times[fname].items()}
        result["frames"][fname] = {"ns": med, "kept": kept[fname]}
        print(f"{fname:20} " + " ".join(f"{med[t]:16.1f}" for t in trees) + f"   {kept[fname]}")
    print(f"load average {os.getloadavg()[0]:.1f}; wrote {write_result('wire_prog', result)}")
    for bpf, _fd in progs.values():
        bpf.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
