#!/usr/bin/env python3
"""What a packet socket on lo costs each packet, apart from its filter's own work.

A loopback TCP ping-pong in C (client and server on CPU 0, TCP_NODELAY, an 80-byte request
and a 160-byte answer per round trip, the shape of a small HTTP exchange) runs with, in
turn: nothing attached; a packet socket on lo that drops every packet (`peers.py`'s floor
socket: PACKET_IGNORE_OUTGOING, a classic BPF `ret #0`); record's socket filter
(capture/wire.py) following the ping-pong's port. Medians of alternating rounds, µs per
round trip and the difference to nothing attached. Far steadier than wrk against nginx
(±3 % here), so it tells the socket's share of record's cost where `peers.py` cannot.

    .venv/bin/python bench/socket_cost.py [--rounds 6] [--seconds 1.5]

Needs root and a C compiler (build-essential, which scripts/setup.sh installs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import _drop_all_packet_socket

from ngxscope.capture.wire import WireCapture
from ngxscope.lab.nginx import free_port

PING_PONG = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    int port = atoi(argv[1]), one = 1; double secs = atof(argv[2]);
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(0, &set); sched_setaffinity(0, sizeof set, &set);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 8)) { perror("bind"); return 1; }
    char req[80], resp[160], buf[4096];
    memset(req, 'a', sizeof req); memset(resp, 'b', sizeof resp);
    pid_t p = fork();
    if (!p) {
        int c = accept(l, 0, 0); setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (;;) { if (recv(c, buf, sizeof buf, 0) <= 0) _exit(0); send(c, resp, sizeof resp, 0); }
    }
    int c = socket(AF_INET, SOCK_STREAM, 0); setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    long it = 0; double t0 = now(), end = t0 + secs;
    for (;;) {
        send(c, req, sizeof req, 0);
        size_t got = 0;
        while (got < sizeof resp) { ssize_t n = recv(c, buf, sizeof buf, 0); if (n <= 0) return 1; got += n; }
        if ((++it & 255) == 0 && now() > end) break;
    }
    double t = now() - t0; close(c); waitpid(p, 0, 0);
    printf("%.3f\n", t / it * 1e6);
    return 0;
}
"""


def _attach(kind: str, port: int) -> Any:
    if kind == "socket":
        return _drop_all_packet_socket()
    if kind == "wire":
        wire = WireCapture([f"127.0.0.1:{port}"], interfaces=["lo"])
        wire.start()
        return wire
    return None


def _detach(tool: Any) -> None:
    if isinstance(tool, WireCapture):
        tool.stop()
    elif tool is not None:
        tool.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()
    kinds = ["none", "socket", "wire"]
    with tempfile.TemporaryDirectory(prefix="ngxscope-socket-cost-") as tmp:
        exe = Path(tmp) / "pingpong"
        src = Path(tmp) / "pingpong.c"
        src.write_text(PING_PONG)
        subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
        res: dict[str, list[float]] = {k: [] for k in kinds}
        for rnd in range(args.rounds):
            for kind in kinds if rnd % 2 == 0 else list(reversed(kinds)):
                port = free_port()
                tool = _attach(kind, port)
                time.sleep(0.2)
                try:
                    out = subprocess.run([str(exe), str(port), str(args.seconds)], capture_output=True,
                                         text=True, check=True).stdout
                finally:
                    _detach(tool)
                res[kind].append(float(out))
    base = statistics.median(res["none"])
    for kind in kinds:
        m = statistics.median(res[kind])
        print(f"{kind:7} {m:7.2f} us per round trip  (+{m - base:5.2f})  rounds: "
              + " ".join(f"{v:.2f}" for v in res[kind]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
