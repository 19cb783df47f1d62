"""nginx's cached clock read in the worker's memory (capture/nginxclock.py, bpf/common.c).

Truth is nginx itself: the pointer found in a live worker leads to the time nginx caches,
and every request's completion event carries exactly the `$msec` nginx logged for it.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from ngxscope.capture.binary import inspect_binary
from ngxscope.capture.events import EV_REQ_DONE, RawEvent, nginx_msec
from ngxscope.capture.nginxclock import cached_time_address, load_bias
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic


def _read(pid: int, addr: int, size: int) -> bytes:
    with open(f"/proc/{pid}/mem", "rb") as fh:
        fh.seek(addr)
        return fh.read(size)


def test_pointer_leads_to_nginx_cached_time(lab_nginx: LabNginx) -> None:
    binary = "/usr/sbin/nginx"
    symbol = inspect_binary(binary).cached_time
    assert symbol, "Debian's nginx exports ngx_cached_time"
    Traffic(lab_nginx.plain_port, lab_nginx.tls_port).keepalive(False, ["/health"])
    for pid in [lab_nginx.master_pid, *lab_nginx.worker_pids()]:
        addr = cached_time_address(pid, binary, symbol)
        assert addr is not None and addr != symbol  # PIE: relocated
        (ptr,) = struct.unpack("<Q", _read(pid, addr, 8))
        sec, msec = struct.unpack("<QQ", _read(pid, ptr, 16))
        assert abs(sec - time.time()) < 3600 and msec < 1000  # nginx caches at least hourly
    assert load_bias(lab_nginx.master_pid, "/bin/sh") is None  # not mapped by nginx


def test_completion_events_carry_nginx_msec(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    tracer = cap.recorder.tracer
    done: list[RawEvent] = []
    sink = tracer._sink

    def tap(ev: RawEvent) -> None:
        if ev.kind == EV_REQ_DONE:
            done.append(ev)
        sink(ev)

    tracer._sink = tap
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    paths = ["/health", "/slow/?ms=30", "/api/items?id=2"] * 3
    sent = sum(traffic.keepalive(tls, paths) for tls in (False, True))
    # workers forked by a reload after the capture started get the address from the kernel
    new_workers = lab_nginx.reload()
    sent += sum(traffic.keepalive(tls, paths) for tls in (False, True))
    log = lab_nginx.wait_log_lines(sent)
    cap.wait_for(sent)
    cap.stop()
    assert len(done) == sent
    assert set(new_workers) & {ev.pid for ev in done}, "no request reached a new worker"
    # a clock read in nginx's memory is a whole millisecond; the epoll fallback almost never is
    assert all(abs(ev.clock * 1000 - round(ev.clock * 1000)) < 1e-3 for ev in done)
    logged = sorted(round(float(line["msec"]) * 1000) for line in log)
    assert sorted(nginx_msec(ev.clock) for ev in done) == logged
