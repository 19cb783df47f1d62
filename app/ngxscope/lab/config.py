"""The lab nginx's files: nginx.conf, the JSON access-log format, certificate, static site.

Locations of the single server (plain port and ``ssl`` port, ``server_name localhost``):

- ``/static/``   small.txt (200 B), page.html (~5 KB), big.bin (1 MiB, sendfile on plain),
                 data.json; ETag / Last-Modified, so ``If-None-Match`` gives 304
- ``= /204``     ``return 204``;  ``= /health``  ``return 200 "ok\\n"``;  anything else 404
- ``/api/``      upstream ``app`` (both backends, keepalive 8, HTTP/1.1)
- ``/slow/``     upstream ``slow`` (backend b1; ``?ms=N`` sleeps)
- ``/flaky/``    upstream ``flaky``: a dead peer (``max_fails=0``: tried every other time,
                 logged as status 502) and b2, ``proxy_next_upstream error timeout http_502``
- ``/fail/NNN``  proxied to ``/api/status/NNN`` (answers NNN)
- ``= /upload``  proxied to ``/api/echo`` with request buffering (bodies > 16 KiB go to disk)
- ``/lab.Echo/M`` gRPC-shaped answers (``application/grpc``, ``grpc-status`` 0 in trailers;
                 ``/lab.Echo/Fail``: 13): trailers need HTTP/2
- ``/ws/``       WebSocket: proxied to upstream ``app`` with ``Upgrade``/``Connection: upgrade``
                 (the backends answer ``.../echo`` with an RFC 6455 echo server)

A third listener (``LabNginx.h2_port``) speaks HTTP/2 over TLS (``listen ... ssl http2``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "LOG_FIELDS",
    "STREAM_LOG_FIELDS",
    "STREAM_MODULE",
    "LabError",
    "nginx_addr",
    "parse_log_line",
    "render_conf",
    "render_stream",
    "self_signed_cert",
    "write_site",
]


class LabError(RuntimeError):
    """The lab nginx or one of its backends could not be started or controlled."""


LOG_FIELDS: dict[str, str] = {
    "client": "$remote_addr:$remote_port",
    "server": "$server_addr:$server_port",
    "request": "$request",
    "method": "$request_method",
    "uri": "$request_uri",
    "protocol": "$server_protocol",
    "status": "$status",
    "bytes_sent": "$bytes_sent",
    "body_bytes_sent": "$body_bytes_sent",
    "request_length": "$request_length",
    "request_time": "$request_time",
    "msec": "$msec",
    "connection": "$connection",
    "connection_requests": "$connection_requests",
    "pid": "$pid",
    "https": "$https",
    "host": "$host",
    "request_id": "$request_id",
    "request_completion": "$request_completion",
    "content_length": "$content_length",
    "lab_id": "$http_x_lab",
    "ssl_protocol": "$ssl_protocol",
    "ssl_cipher": "$ssl_cipher",
    "ssl_server_name": "$ssl_server_name",
    "ssl_session_reused": "$ssl_session_reused",
    "ssl_alpn_protocol": "$ssl_alpn_protocol",
    "upstream_addr": "$upstream_addr",
    "upstream_status": "$upstream_status",
    "upstream_connect_time": "$upstream_connect_time",
    "upstream_header_time": "$upstream_header_time",
    "upstream_response_time": "$upstream_response_time",
    "upstream_bytes_sent": "$upstream_bytes_sent",
    "upstream_bytes_received": "$upstream_bytes_received",
    "proxy_host": "$proxy_host",
    "server_name": "$server_name",
    "proxy_client": "$proxy_protocol_addr:$proxy_protocol_port",
}
"""Access log keys and the nginx variables behind them (all logged as JSON strings)."""

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
"""Debian's stream module (package libnginx-mod-stream), loaded with ``load_module``."""

STREAM_LOG_FIELDS: dict[str, str] = {
    "client": "$remote_addr:$remote_port",
    "server": "$server_addr:$server_port",
    "server_port": "$server_port",
    "protocol": "$protocol",
    "status": "$status",
    "bytes_sent": "$bytes_sent",
    "bytes_received": "$bytes_received",
    "session_time": "$session_time",
    "upstream_addr": "$upstream_addr",
    "upstream_bytes_sent": "$upstream_bytes_sent",
    "upstream_bytes_received": "$upstream_bytes_received",
    "upstream_connect_time": "$upstream_connect_time",
    "upstream_first_byte_time": "$upstream_first_byte_time",
    "upstream_session_time": "$upstream_session_time",
    "msec": "$msec",
    "connection": "$connection",
    "pid": "$pid",
}
"""The stream (TCP proxy) access log's keys and nginx variables (logs/stream.log)."""

_INT_FIELDS = (
    "status",
    "bytes_sent",
    "body_bytes_sent",
    "request_length",
    "connection",
    "connection_requests",
    "pid",
    "bytes_received",
)
_FLOAT_FIELDS = ("request_time", "msec", "session_time")

_CERT_LOCK = threading.Lock()
_CERT_CACHE: tuple[bytes, bytes] | None = None


def self_signed_cert() -> tuple[bytes, bytes]:
    """Generate (once per process) a self-signed localhost certificate: (cert, key) PEM."""
    global _CERT_CACHE
    with _CERT_LOCK:
        if _CERT_CACHE is None:
            with tempfile.TemporaryDirectory(prefix="ngxscope-cert-") as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cmd = [
                    "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert),
                ]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise LabError(f"openssl failed: {proc.stderr.strip()[-500:]}")
                _CERT_CACHE = (cert.read_bytes(), key.read_bytes())
        return _CERT_CACHE


def nginx_addr(addr: str) -> str:
    """An address as ngxscope writes it ("ip:port", IPv6 bracketed: "[::1]:60752") the way
    the lab log's ``$remote_addr:$remote_port`` (and $server_addr, $proxy_protocol_addr)
    writes it ("::1:60752"): compare captured addresses with logged ones through this."""
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if sep:
            return f"{host}:{port}"
    if addr.startswith("unix:"):
        return addr + ":"  # a unix socket has no port: nginx logs "unix:" and ""
    if addr.startswith("[") and addr.endswith("]"):
        return addr[1:-1] + ":"  # no port (realip's client from a header): $remote_port ""
    if addr and ":" not in addr:
        return addr + ":"
    return addr


def parse_log_line(line: str) -> dict[str, Any]:
    """One access-log line; plain-number fields become int / float, the rest stay str."""
    rec: dict[str, Any] = json.loads(line)
    for key in _INT_FIELDS:
        value = rec.get(key)
        if isinstance(value, str) and value.isdigit():
            rec[key] = int(value)
    for key in _FLOAT_FIELDS:
        value = rec.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                rec[key] = float(value)
    return rec


def write_site(prefix: Path) -> None:
    """Create the prefix layout: log and temp dirs, certificate, static files."""
    for sub in (
        "logs",
        "tls",
        "html/static",
        "tmp/body",
        "tmp/proxy",
        "tmp/fastcgi",
        "tmp/uwsgi",
        "tmp/scgi",
    ):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_cert()
    (prefix / "tls" / "cert.pem").write_bytes(cert)
    (prefix / "tls" / "key.pem").write_bytes(key)
    key_path = prefix / "tls" / "key.pem"
    key_path.chmod(0o600)
    rng = random.Random(20240601)
    static = prefix / "html" / "static"
    small = "ngxscope lab: a small static text file.\n" * 5
    static.joinpath("small.txt").write_text(small[:200])
    rows = "\n".join(
        f"<p>Paragraph {i}: the quick brown fox jumps over the lazy dog.</p>" for i in range(72)
    )
    static.joinpath("page.html").write_text(
        f"<!doctype html>\n<html><head><title>ngxscope lab</title></head>\n<body>\n{rows}\n"
        "</body></html>\n"
    )
    static.joinpath("big.bin").write_bytes(rng.randbytes(1 << 20))
    data = {"name": "ngxscope-lab", "items": [{"id": i, "value": i * i} for i in range(20)]}
    static.joinpath("data.json").write_text(json.dumps(data, indent=1) + "\n")


def render_conf(
    prefix: Path,
    workers: int,
    plain_port: int,
    tls_port: int,
    dead_port: int,
    backends: list[str],
    extra_http: str = "",
    h2_port: int = 0,
    stream: str = "",
) -> str:
    """The lab's nginx.conf: master + `workers`, one server on the plain and the TLS port
    (and, with `h2_port`, an HTTP/2 TLS listener: ``listen ... ssl http2``); `stream` is a
    `render_stream` block (with the ``load_module`` it needs)."""
    p = prefix
    fmt = ",".join(f'"{k}":"{v}"' for k, v in LOG_FIELDS.items())
    b1, b2 = backends
    user = "user root;\n" if os.geteuid() == 0 else ""
    h2_listen = f"        listen 127.0.0.1:{h2_port} ssl http2;\n" if h2_port else ""
    modules = f"load_module {STREAM_MODULE};\n" if stream else ""
    return f"""# generated by ngxscope.lab
{modules}{user}worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/logs/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    types {{
        text/html html;
        text/plain txt;
        application/json json;
        application/octet-stream bin;
    }}
    default_type application/octet-stream;

    log_format ngxscope_json escape=json '{{{fmt}}}';
    access_log {p}/logs/access.log ngxscope_json;

    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;

    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 1000;
    client_body_buffer_size 16k;
    client_max_body_size 10m;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_connect_timeout 2s;

    upstream app {{
        server {b1};
        server {b2};
        keepalive 8;
    }}
    upstream slow {{
        server {b1};
        keepalive 4;
    }}
    upstream flaky {{
        server 127.0.0.1:{dead_port} max_fails=0;
        server {b2};
        keepalive 4;
    }}

{extra_http}

    server {{
        listen 127.0.0.1:{plain_port};
        listen 127.0.0.1:{tls_port} ssl;
{h2_listen}        server_name localhost;

        ssl_certificate {p}/tls/cert.pem;
        ssl_certificate_key {p}/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;

        root {p}/html;

        location /static/ {{
            etag on;
        }}
        location = /204 {{
            return 204;
        }}
        location = /health {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
        location /api/ {{
            proxy_pass http://app;
        }}
        location /slow/ {{
            proxy_pass http://slow;
        }}
        location /flaky/ {{
            proxy_pass http://flaky;
            proxy_next_upstream error timeout http_502;
        }}
        location /fail/ {{
            proxy_pass http://app/api/status/;
        }}
        location = /upload {{
            proxy_pass http://app/api/echo;
        }}
        location /lab.Echo/ {{
            default_type application/grpc;
            add_trailer grpc-status 0;
            add_trailer grpc-message ok;
            return 200 "grpc-ish body";
        }}
        location = /lab.Echo/Fail {{
            default_type application/grpc;
            add_trailer grpc-status 13;
            add_trailer grpc-message "lab failure";
            return 200 "grpc-ish body";
        }}
        location /ws/ {{
            proxy_pass http://app;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 30s;
        }}
        location / {{
            return 404;
        }}
    }}
}}
{stream}"""


def render_stream(prefix: Path, tcp_port: int, tcp_fail_port: int, dead_port: int,
                  peers: list[str]) -> str:
    """The ``stream {}`` block: `tcp_port` proxies to upstream ``tcp_echo`` (a dead peer, tried
    every third session and logged as a failed attempt, then the two `peers`);
    `tcp_fail_port` to ``tcp_dead`` (the dead peer alone: status 502). Its own JSON log."""
    fmt = ",".join(f'"{k}":"{v}"' for k, v in STREAM_LOG_FIELDS.items())
    p1, p2 = peers
    return f"""
stream {{
    log_format ngxscope_stream escape=json '{{{fmt}}}';
    access_log {prefix}/logs/stream.log ngxscope_stream;
    proxy_connect_timeout 2s;

    upstream tcp_echo {{
        server 127.0.0.1:{dead_port} max_fails=0;
        server {p1};
        server {p2};
    }}
    upstream tcp_dead {{
        server 127.0.0.1:{dead_port} max_fails=0;
    }}
    server {{
        listen 127.0.0.1:{tcp_port};
        proxy_pass tcp_echo;
        proxy_next_upstream on;
    }}
    server {{
        listen 127.0.0.1:{tcp_fail_port};
        proxy_pass tcp_dead;
    }}
}}
"""
