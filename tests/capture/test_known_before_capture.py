"""Connections nginx opened before the capture started are captured whole once they are known
(real nginx, real eBPF): a client keep-alive connection accepted before the attach (no
ngx_http_init_connection is seen for it) and the upstream keep-alive connections the worker
cached before it (no connect(2) is seen for them). With syscall I/O, plaintext writes are
seen at writev(2)'s tracepoints, which know a socket only by a state made elsewhere: the
client's at its first completion, the upstream's from the request it is written for."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx

from .test_upstreams import compare_upstreams
from .truth import by_lab_id, compare


def _get(s: socket.socket, path: str, lab_id: str) -> None:
    """One keep-alive GET on `s`, its answer read whole (Content-Length or chunked)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Lab: {lab_id}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"{path}: connection closed before the answer's head"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").lower().split("\r\n")
    length = next((int(ln.split(":", 1)[1]) for ln in lines if ln.startswith("content-length:")), None)
    if length is not None:
        while len(body) < length:
            body += s.recv(65536)
    else:
        assert any("chunked" in ln for ln in lines if ln.startswith("transfer-encoding:")), head
        while not body.endswith(b"0\r\n\r\n"):
            body += s.recv(65536)


@pytest.mark.capture
@pytest.mark.parametrize(("syscall_io", "syscall_regs"), [(True, True), (True, False), (False, False)],
                         ids=["syscall-regs", "syscall-entries", "uprobes-only"])
def test_connections_from_before_the_capture(capture_factory: Any, syscall_io: bool, syscall_regs: bool) -> None:
    with LabNginx(workers=1) as lab:   # one worker: its upstream keepalive cache serves both sockets
        s = socket.create_connection(("127.0.0.1", lab.plain_port))
        try:
            # before the attach: the client connection, and a cached upstream connection to
            # each of upstream app's two peers (round robin)
            for i in range(4):
                _get(s, f"/api/before/{i}", f"before-{i}")
            start = lab.log_line_count()
            cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io, syscall_regs=syscall_regs)
            # this kernel (5.15+, x86-64) reads the arguments from the registers unless told not to
            tracer = cap.recorder.tracer
            assert (tracer.syscall_io, tracer.syscall_regs) == (syscall_io, syscall_regs), tracer.io_reason
            # the first exchange after the attach makes the connection known (its first
            # completion, with syscall I/O): from the next one on it is captured whole
            _get(s, "/health", "first")
            ids = [f"after-{i}" for i in range(6)]
            for i, lab_id in enumerate(ids):
                _get(s, f"/api/after/{i}" if i % 3 else "/static/small.txt", lab_id)
            log = [line for line in lab.wait_log_lines(len(ids) + 1, start=start) if line["lab_id"] in ids]
            exchanges = cap.wait_for(len(ids))
            cap.stop()
        finally:
            s.close()
    assert len(log) == len(ids)
    mine = [ex for ex in exchanges if any(k.lower() == "x-lab" and v in ids for k, v in ex.request_headers)]
    problems = compare(log, mine)
    pairs, _ = by_lab_id(log, mine)
    proxied, upstream_problems = compare_upstreams(pairs)
    problems += upstream_problems
    attempts = [a for line, ex in pairs if line["upstream_addr"] not in ("", "-") for a in ex.upstream]
    print(f"\n{len(pairs)}/{len(ids)} exchanges on the connection opened before the capture, "
          f"{proxied} proxied, upstream attempts {[(a.addr, a.reused) for a in attempts]}")
    assert not problems, "\n".join(problems)
    assert len(pairs) == len(ids) and proxied == 4
    # the upstream connections were cached before the attach: every attempt reuses one, and
    # its request and answer were seen on it
    assert len(attempts) == proxied and all(a.reused for a in attempts)
    for a in attempts:
        assert a.request_head and a.request_head.startswith("GET /api/after/"), a.request_head
        assert a.response_head and a.response_head.startswith("HTTP/1.1 200"), a.response_head
