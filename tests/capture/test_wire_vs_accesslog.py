"""The socket filter's TCP/TLS facts against nginx's own access and error logs.

Real nginx (TLS listener, TLS 1.2 and 1.3), real eBPF (uprobes + the socket filter), real
clients (Python's ssl): every access-log line's `$ssl_protocol`, `$ssl_cipher`,
`$ssl_server_name`, `$ssl_alpn_protocol`, `$ssl_session_reused`, `$connection_requests`
equals the captured exchange's; every `SSL_do_handshake() failed` line of the error log has a
"tls-failed" record; connections closed or reset before a request have theirs.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
import warnings
from typing import Any

import pytest

from factories import keepalive_health
from ngxscope.lab.nginx import LabNginx
from ngxscope.model import Exchange
from ngxscope.pipeline.errorlog import parse_failure

from .truth import by_lab_id, unequal

pytestmark = pytest.mark.capture

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
SNIS = ("localhost", "shop.example.test", None)
ALPNS: tuple[list[str] | None, ...] = (None, ["http/1.1"], ["h2", "http/1.1"])
CIPHERS_12 = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305")


def _ctx(version: str, alpn: list[str] | None, cipher: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    if cipher:
        ctx.set_ciphers(cipher)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _requests(port: int, ctx: ssl.SSLContext, sni: str | None, lab_ids: list[str],
              session: ssl.SSLSession | None = None) -> ssl.SSLSession | None:
    """Requests on one connection (keep-alive, the last one closes); returns the session."""
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=sni,
                         session=session) as s:
        keepalive_health(s, lab_ids)
        return s.session


def compare_tls(log: list[dict[str, Any]], exchanges: list[Exchange]) -> list[str]:
    pairs, problems = by_lab_id(log, exchanges, label=lambda line: f"lab {line['lab_id']}")
    for line, ex in pairs:
        label = f"lab {line['lab_id']}"
        problems += unequal(label, {
            "tls_version": (ex.tls_version, line["ssl_protocol"] or None),
            "tls_cipher": (ex.tls_cipher, line["ssl_cipher"] or None),
            "sni": (ex.sni, line["ssl_server_name"] or None),
            "alpn": (ex.alpn, line["ssl_alpn_protocol"] or None),
            "tls_resumed": (ex.tls_resumed, line["ssl_session_reused"] == "r"),
            "connection_requests": (ex.conn_seq + 1, line["connection_requests"]),
        })
        if ex.tcp_connect_ms is None or not 0 <= ex.tcp_connect_ms < 1000:
            problems.append(f"{label}: tcp_connect_ms {ex.tcp_connect_ms}")
        if ex.tls_handshake_ms is None or not 0 < ex.tls_handshake_ms < 5000:
            problems.append(f"{label}: tls_handshake_ms {ex.tls_handshake_ms}")
    return problems


def _failing_clients(port: int) -> dict[str, str]:
    """Clients whose handshake nginx refuses; returns {client address: what it did}."""
    out: dict[str, str] = {}

    def attempt(what: str, ctx: ssl.SSLContext | None = None, raw: bytes | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        out[f"127.0.0.1:{sock.getsockname()[1]}"] = what
        try:
            if ctx is not None:
                with pytest.raises(ssl.SSLError):
                    ctx.wrap_socket(sock, server_hostname="localhost")
            else:
                assert raw is not None
                sock.sendall(raw)
                sock.settimeout(5)
                while sock.recv(4096):
                    pass
        finally:
            sock.close()

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():  # deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    attempt("only TLS 1.0/1.1 offered", old)
    attempt("only ECDSA cipher suites offered (nginx has an RSA key)",
            _ctx("1.2", None, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"))
    body = os.urandom(40)
    garbage = b"\x16\x03\x01" + struct.pack("!H", len(body) + 4) + b"\x01\x00" + struct.pack("!H", len(body)) + body
    attempt("garbage ClientHello", raw=garbage)
    return out


def _wait(cap: Any, n: int, timeout: float = 10.0) -> list[Exchange]:
    """Wait for `n` records of connections that never became a request."""
    deadline = time.monotonic() + timeout
    while True:
        with cap.sink.lock:
            found = list(cap.sink.connections)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize(("syscall_io", "syscall_regs"), [(True, True), (True, False), (False, False)],
                         ids=["syscall-regs", "syscall-entries", "uprobes-only"])
def test_wire_matches_logs(lab_nginx: LabNginx, capture_factory: Any, syscall_io: bool, syscall_regs: bool) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid, syscall_io=syscall_io, syscall_regs=syscall_regs)
    assert cap.recorder.tracer.syscall_regs == syscall_regs
    assert cap.recorder.wire is not None, "the socket filter attached"
    port = lab_nginx.tls_port
    err_start = len(lab_nginx.error_log_path.read_text(errors="replace").splitlines())
    sent = 0
    n = 0
    for version in VERSIONS:
        ciphers = CIPHERS_12 if version == "1.2" else (None,)
        for cipher in ciphers:
            for sni in SNIS:
                for alpn in ALPNS:
                    ctx = _ctx(version, alpn, cipher)
                    ids = [f"w{n}-{i}" for i in range(3)]
                    session = _requests(port, ctx, sni, ids)
                    again = [f"w{n}-r"]
                    _requests(port, ctx, sni, again, session=session)  # resumption
                    sent += len(ids) + len(again)
                    n += 1
    failing = _failing_clients(port)
    # connections that never became a request: closed, and reset (SO_LINGER 0)
    quiet = socket.create_connection(("127.0.0.1", port))
    closed = f"127.0.0.1:{quiet.getsockname()[1]}"
    time.sleep(0.05)
    quiet.close()
    rst = socket.create_connection(("127.0.0.1", port))
    reset = f"127.0.0.1:{rst.getsockname()[1]}"
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.05)
    rst.close()

    log = lab_nginx.wait_log_lines(sent)
    assert len(log) == sent
    cap.wait_for(sent)
    records = _wait(cap, len(failing) + 2)
    stats = cap.recorder.counters()
    cap.stop()
    exchanges = cap.sink.exchanges
    problems = compare_tls(log, exchanges)
    resumed = sum(1 for line in log if line["ssl_session_reused"] == "r")
    print(f"\naccess log {len(log)} lines ({resumed} resumed), fields unequal: {len(problems)}; "
          f"wire: {stats.get('wire_seen')} packets seen, {stats.get('wire_passed')} passed")
    assert not problems, "\n".join(problems[:40])
    assert resumed >= n, "every second connection resumes"

    errors = lab_nginx.error_log_path.read_text(errors="replace").splitlines()[err_start:]
    failed_lines = [ln for ln in errors if "SSL_do_handshake() failed" in ln]
    by_client = {ex.client: ex for ex in records}
    print(f"error log: {len(failed_lines)} failed handshakes; records: "
          + "; ".join(f"{ex.client} {ex.conn_outcome} {ex.error}" for ex in records))
    assert len(failed_lines) == len(failing), "\n".join(errors)
    for client, what in failing.items():
        ex = by_client.get(client)
        assert ex is not None, f"{what}: no record for {client}"
        assert ex.conn_outcome == "tls-failed", f"{what}: {ex.conn_outcome} {ex.error}"
        assert ex.error and "alert" in ex.error, f"{what}: {ex.error}"
        assert ex.status is None and ex.method == ""
    assert sum(1 for ex in records if ex.conn_outcome == "tls-failed") == len(failed_lines)
    # nginx's own reason, from its error log, on each record: the same reasons as the log's
    logged = sorted(f.reason for f in map(parse_failure, failed_lines) if f is not None)
    got = sorted(ex.error.rsplit("(nginx: ", 1)[1].rstrip(")") for ex in records
                 if ex.conn_outcome == "tls-failed" and ex.error and "(nginx: " in ex.error)
    assert got == logged and len(logged) == len(failing), (got, logged)
    assert by_client[closed].conn_outcome == "closed"
    assert by_client[reset].conn_outcome == "reset" and by_client[reset].reset_by == "client"
