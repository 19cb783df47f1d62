"""What nginx logs but the bytes do not show: $status 444/499, $request_length after
large_client_header_buffers, request lines nginx rejected (400) or took as HTTP/0.9, header
names it ignores. The capture reads those from nginx's request struct at the completion
(EV_REQ_LOG, offsets per build: capture/layout.py), so the exchanges must equal the access
log field by field, on Debian's nginx and on the static build (other configure options, so
other offsets: a wrong one fails here), with and without syscall I/O.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.config import nginx_addr
from ngxscope.lab.nginx import LabNginx, free_port

from .truth import by_client, client_socket, request_fields, unequal

pytestmark = pytest.mark.capture

BUILDS = Path(os.environ.get("NGXSCOPE_BUILDS", "/var/cache/ngxscope/nginx-builds"))

_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        listen [::1]:{port};
        server_name fidelity;
        ssl_certificate {prefix}/tls/cert.pem;
        ssl_certificate_key {prefix}/tls/key.pem;
        client_header_buffer_size 1k;
        large_client_header_buffers 4 8k;
        location = /close {{
            return 444;
        }}
        location /slow/ {{
            proxy_pass http://slow;
        }}
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
{more}
    }}
"""

# Debian's build only (the static build has no auth_request module): a request body the
# auth_request subrequest's proxy read, so $request_length is not what the bytes say
_AUTH = """
        location = /authed {
            auth_request /auth;
            default_type text/plain;
            return 200 "authed\\n";
        }
        location = /auth {
            internal;
            proxy_pass http://app/api/echo;
        }
"""

# (name, request bytes, seconds to wait before closing without reading: None = read it all)
_PLAIN: list[tuple[str, bytes, float | None]] = [
    *[(f"ok{i}", b"GET /ok%d HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n" % i, None) for i in range(8)],
    ("444", b"GET /close HTTP/1.1\r\nHost: f\r\n\r\n", None),
    ("499", b"GET /slow/?ms=3000 HTTP/1.1\r\nHost: f\r\n\r\n", 0.3),
    ("large-header", b"GET /big HTTP/1.1\r\nHost: f\r\nX-Big: " + b"b" * 1500 + b"\r\nConnection: close\r\n\r\n",
     None),
    ("space-in-uri", b"GET / / HTTP/1.0\r\n\r\n", None),
    ("http09", b"GET /simple\r\n", None),
    ("not-http", b"\x16\x03\x01\x00\x05hello\r\n\r\n", None),
    ("ignored-headers", b"GET /hdr HTTP/1.1\r\nHost: f\r\nmy_header: 1\r\nbad[name: 2\r\nConnection: close\r\n\r\n",
     None),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", None),
]
_AUTH_REQUESTS: list[tuple[str, bytes, float | None]] = [
    ("auth-body", b"POST /authed HTTP/1.1\r\nHost: f\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
     + b"x" * 5000, None),
]
_IPV6: list[tuple[str, bytes, float | None]] = [
    ("ipv6-ok", b"GET /six HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n", None),
    ("ipv6-444", b"GET /close HTTP/1.1\r\nHost: f\r\n\r\n", None),
]
_TLS: list[tuple[str, bytes, float | None]] = [
    ("tls-444", b"GET /close HTTP/1.1\r\nHost: f\r\n\r\n", None),
    ("tls-http09", b"GET /simple\r\n", None),
    ("tls-space-in-uri", b"GET / / HTTP/1.0\r\n\r\n", None),
]


def _send(port: int, data: bytes, wait: float | None, tls: bool, host: str = "127.0.0.1") -> str:
    """One request on its own connection; returns the client address as nginx logs it."""
    raw = client_socket(host, port)
    sock: socket.socket = raw
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
    host, cport = sock.getsockname()[:2]
    try:
        sock.sendall(data)
        if wait is not None:
            time.sleep(wait)
        else:
            while True:
                try:
                    if not sock.recv(65536):
                        break
                except (ConnectionResetError, ssl.SSLError):
                    break
    finally:
        sock.close()
    return f"{host}:{cport}"


def _run(binary: str, tmp_path: Path, capture_factory: Any, syscall_io: bool, auth: bool) -> None:
    prefix = tmp_path / "lab"
    port, tls_port = free_port(), free_port()
    lab = LabNginx(workers=2, nginx_bin=binary, prefix=prefix,
                   extra_http=_SERVER.format(port=port, tls_port=tls_port, prefix=prefix, more=_AUTH if auth else ""))
    lab.start()
    try:
        cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io)
        assert cap.recorder.tracer.config.layout.request_log, cap.recorder.tracer.config.layout.note
        names: dict[str, str] = {}
        for name, data, wait in _PLAIN + (_AUTH_REQUESTS if auth else []):
            names[_send(port, data, wait, False)] = name
        for name, data, wait in _TLS:
            names[_send(tls_port, data, wait, True)] = name
        for name, data, wait in _IPV6:
            names[_send(port, data, wait, False, "::1")] = name
        log = [line for line in lab.wait_log_lines(len(names), timeout=15.0) if line["client"] in names]
        assert len(log) == len(names), f"{len(log)} of {len(names)} requests logged"
        exchanges = cap.wait_for(len(names))
        nginx_values = cap.recorder.assembler.emitter.nginx
        cap.stop()
    finally:
        lab.stop()
    pairs, problems = by_client(log, exchanges, label=lambda line: str(names[line["client"]]))
    for line, ex in pairs:
        name = names[line["client"]]
        problems += unequal(name, {
            **request_fields(ex, line),
            "version": (ex.version, line["protocol"]),
            "server": (nginx_addr(ex.server), line["server"]),
            "tls": (ex.tls, line["https"] == "on"),
        })
        print(f"  {name}: {line['request']!r} -> {line['status']} {line['request_length']}/{line['bytes_sent']}"
              f"; flagged: {ex.error!r}")
    print(f"\n{binary}: {len(log)} log lines, {len(log) - len({p.split(':')[0] for p in problems})} equal; "
          f"nginx values checked {nginx_values.agreed}, distrusted: {nginx_values.distrusted!r}")
    assert not nginx_values.distrusted
    assert nginx_values.agreed == 8
    assert not problems, "\n".join(problems)
    assert any(ex.client.startswith("[::1]:") for ex in exchanges), "IPv6 clients bracketed"
    statuses = {line["status"] for line in log}
    assert {444, 499, 400, 200} <= statuses


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_debian_nginx_values(tmp_path: Path, capture_factory: Any, syscall_io: bool) -> None:
    _run("/usr/sbin/nginx", tmp_path, capture_factory, syscall_io, auth=True)


def test_static_build_nginx_values(tmp_path: Path, capture_factory: Any) -> None:
    """The static build has no DAV, realip or gzip module: other request-struct offsets."""
    binary = BUILDS / "static-ssl" / "nginx"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} missing: run scripts/setup.sh (it runs scripts/build-nginx-static.sh)")
    _run(str(binary), tmp_path, capture_factory, True, auth=False)


def test_wrong_offsets_are_caught(tmp_path: Path, capture_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The static build read with Debian's request-struct offsets (DAV and realip fields
    that build does not have): the self-check must refuse nginx's values, and the exchanges
    keep the byte-derived ones (a 444 then has no status: none was sent)."""
    import ngxscope.pipeline.recorder
    from ngxscope.capture.layout import layout_for_binary

    binary = BUILDS / "static-ssl" / "nginx"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} missing: run scripts/setup.sh (it runs scripts/build-nginx-static.sh)")
    wrong = layout_for_binary("/usr/sbin/nginx", "1.22.1")
    assert wrong.r_status != layout_for_binary(binary, "1.22.1").r_status
    monkeypatch.setattr(ngxscope.pipeline.recorder, "layout_for_binary", lambda path, version: wrong)
    prefix = tmp_path / "lab"
    port, tls_port = free_port(), free_port()
    lab = LabNginx(workers=1, nginx_bin=str(binary), prefix=prefix,
                   extra_http=_SERVER.format(port=port, tls_port=tls_port, prefix=prefix, more=""))
    lab.start()
    try:
        cap = capture_factory(pid=lab.master_pid)
        names = {_send(port, data, wait, False): name for name, data, wait in _PLAIN[:9]}
        lab.wait_log_lines(len(names))
        exchanges = cap.wait_for(len(names))
        nginx_values = cap.recorder.assembler.emitter.nginx
        cap.stop()
    finally:
        lab.stop()
    print(f"\nwrong offsets: distrusted: {nginx_values.distrusted!r}")
    assert nginx_values.distrusted
    by_name = {names[nginx_addr(ex.client)]: ex for ex in exchanges if nginx_addr(ex.client) in names}
    assert by_name["444"].status is None
    assert all(by_name[f"ok{i}"].status == 200 for i in range(8))
