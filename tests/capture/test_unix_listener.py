"""An http listener on a unix socket whose path is longer than the sockaddr bytes the probes
copy, with another bound socket sharing the copied prefix (nginx-tests'
proxy_protocol_unix.t): /proc/net/unix cannot complete the path, nginx's configuration can.
(A path not read at all, "unix:", is completed the same way.) nginx's $server_addr is the
truth, as in every capture test."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.config import nginx_addr
from ngxscope.lab.nginx import LabNginx

pytestmark = pytest.mark.capture

_SERVER = """
    server {{
        listen unix:{path};
        server_name unixed;
        location / {{
            return 200 "ok\\n";
        }}
    }}
"""


def _get_u(paths: list[Path]) -> None:
    """One `GET /u` (Host: unixed) over each unix socket path, read to the close."""
    for path in paths:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /u HTTP/1.0\r\nHost: unixed\r\n\r\n")
            while sock.recv(65536):
                pass


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_cut_unix_listener_path_completed_from_config(tmp_path: Path, capture_factory: Any,
                                                       syscall_io: bool) -> None:
    prefix = tmp_path / "lab"
    prefix.mkdir()
    path = prefix / "http-listener.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(prefix / "http-other.sock"))  # bound, sharing every copied byte
    other.listen(1)
    assert len(str(path)) > 26, "longer than the copied sockaddr bytes"
    lab = LabNginx(workers=1, prefix=prefix, extra_http=_SERVER.format(path=path))
    lab.start()
    try:
        cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io)
        before = lab.log_line_count()
        _get_u([path, path])
        log = lab.wait_log_lines(2, start=before, timeout=15.0)
        exchanges = [ex for ex in cap.wait_for(2) if ex.target == "/u"]
        cap.stop()
    finally:
        lab.stop()
        other.close()
    assert [line["server"] for line in log] == [f"unix:{path}:"] * 2
    assert len(exchanges) == 2
    for ex in exchanges:
        assert nginx_addr(ex.server) == f"unix:{path}:", ex.server
        assert ex.server_block == "unixed" and ex.status == 200


_TWO = """
    server {{
        listen unix:{a};
        listen unix:{b};
        server_name unixed;
        location / {{
            return 200 "ok\\n";
        }}
    }}
"""


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_unix_listener_path_read_from_nginx(tmp_path: Path, capture_factory: Any, syscall_io: bool) -> None:
    """Two http listeners sharing every copied byte: neither /proc/net/unix nor the
    configuration can tell them apart; the completion probe reads the listener's whole path
    (c->local_sockaddr) from nginx."""
    prefix = tmp_path / "lab"
    prefix.mkdir()
    paths = [prefix / "http-listener-a.sock", prefix / "http-listener-b.sock"]
    lab = LabNginx(workers=1, prefix=prefix, extra_http=_TWO.format(a=paths[0], b=paths[1]))
    lab.start()
    try:
        cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io)
        before = lab.log_line_count()
        _get_u(paths)
        log = lab.wait_log_lines(2, start=before, timeout=15.0)
        exchanges = [ex for ex in cap.wait_for(2) if ex.target == "/u"]
        cap.stop()
    finally:
        lab.stop()
    assert [line["server"] for line in log] == [f"unix:{p}:" for p in paths]
    assert [nginx_addr(ex.server) for ex in sorted(exchanges, key=lambda e: e.id)] == [f"unix:{p}:" for p in paths]
