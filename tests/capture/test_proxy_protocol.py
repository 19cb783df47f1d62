"""PROXY protocol listeners (``listen ... proxy_protocol``, plain and TLS, version 1 text and
version 2 binary headers): the header is no part of the request; the exchange reports the
client it names (`Exchange.proxy_client`, nginx's $proxy_protocol_addr:$proxy_protocol_port)
beside the socket peer, and equals the access log field by field, with and without syscall
I/O. IPv6 clients named by the header are written in brackets ("[2001:db8::7]:51000"),
nginx writes them bare: the comparison knows (`nginx_addr`).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest

from ngxscope.decode.proxyproto import V2_SIGNATURE
from ngxscope.lab.config import nginx_addr
from ngxscope.lab.nginx import LabNginx, free_port

pytestmark = pytest.mark.capture

_SERVER = """
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        listen 127.0.0.1:{tls_port} ssl proxy_protocol;
        server_name pp;
        ssl_certificate {prefix}/tls/cert.pem;
        ssl_certificate_key {prefix}/tls/key.pem;
        location / {{
            default_type text/plain;
            return 200 "behind a balancer\\n";
        }}
    }}
"""


def _v1(ip: str, port: int) -> bytes:
    fam = "TCP6" if ":" in ip else "TCP4"
    dst = "::1" if fam == "TCP6" else "127.0.0.1"
    return f"PROXY {fam} {ip} {dst} {port} 443\r\n".encode()


def _v2(ip: str, port: int) -> bytes:
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        body = a.packed + bytes(4) + struct.pack(">HH", port, 443)
        fam = 0x11
    else:
        body = a.packed + bytes(16) + struct.pack(">HH", port, 443)
        fam = 0x21
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body


CASES = [
    ("v1-ipv4", _v1, "203.0.113.9", 40001),
    ("v1-ipv6", _v1, "2001:db8::7", 40002),
    ("v2-ipv4", _v2, "198.51.100.20", 40003),
    ("v2-ipv6", _v2, "2001:db8::8", 40004),
]


def _request(port: int, header: bytes, lab_id: str, tls: bool) -> None:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(header)
    sock: socket.socket = raw
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        sock.sendall(f"GET /pp/{lab_id}?q=1 HTTP/1.1\r\nHost: pp\r\nX-Lab: {lab_id}\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass
    finally:
        sock.close()


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_proxy_protocol_matches_access_log(tmp_path: Path, capture_factory: Any, syscall_io: bool) -> None:
    _run(tmp_path, capture_factory, "/usr/sbin/nginx", syscall_io=syscall_io)


def test_proxy_protocol_fallback_capture(tmp_path: Path, capture_factory: Any) -> None:
    """nginx without ngx_* symbols (libssl uprobes + syscalls): the same, from the bytes."""
    from .test_fallback import renamed_nginx

    (tmp_path / "bin").mkdir()
    _run(tmp_path, capture_factory, str(renamed_nginx(tmp_path / "bin")), syscall_io=True)


def _run(tmp_path: Path, capture_factory: Any, binary: str, syscall_io: bool) -> None:
    prefix = tmp_path / "lab"
    port, tls_port = free_port(), free_port()
    lab = LabNginx(workers=2, prefix=prefix, nginx_bin=binary,
                   extra_http=_SERVER.format(port=port, tls_port=tls_port, prefix=prefix))
    lab.start()
    try:
        cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io)
        n = 0
        for tls in (False, True):
            for name, make, ip, cport in CASES:
                _request(tls_port if tls else port, make(ip, cport), f"{name}-{'tls' if tls else 'plain'}", tls)
                n += 1
        log = lab.wait_log_lines(n)
        exchanges = cap.wait_for(n)
        cap.stop()
    finally:
        lab.stop()
    by_id = {next((v for k, v in ex.request_headers if k.lower() == "x-lab"), None): ex for ex in exchanges}
    problems = []
    for line in log:
        ex = by_id.get(line["lab_id"])
        if ex is None:
            problems.append(f"{line['lab_id']}: not captured ({len(exchanges)} exchanges)")
            continue
        checks = {
            "proxy_client": (nginx_addr(ex.proxy_client or ""), line["proxy_client"]),
            "client": (nginx_addr(ex.client), line["client"]),
            "method": (ex.method, line["method"]),
            "target": (ex.target, line["uri"]),
            "status": (ex.status, line["status"]),
            "request_bytes": (ex.request_bytes, line["request_length"]),
            "response_bytes": (ex.response_bytes, line["bytes_sent"]),
            "tls": (ex.tls, line["https"] == "on"),
            "error": (ex.error, None),
        }
        problems += [f"{line['lab_id']}: {f} {got!r} != log {want!r}" for f, (got, want) in checks.items()
                     if got != want]
    print(f"\nPROXY protocol: {len(log)} log lines, {len(log) - len({p.split(':')[0] for p in problems})} equal")
    assert len(log) == n
    assert not problems, "\n".join(problems)
    assert {ex.proxy_client for ex in exchanges} >= {"[2001:db8::7]:40002", "203.0.113.9:40001"}
