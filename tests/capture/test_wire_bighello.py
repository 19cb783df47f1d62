"""A ClientHello bigger than 2 KiB, and one split across TCP segments, keeps its facts.

Real nginx, real eBPF: `openssl s_client` offering 40 long ALPN names (a ClientHello of
about 2.8 KiB in one segment on loopback: more than the filter's 2 KiB cap for other
handshake records), and a Python TLS client that writes its ClientHello in three TCP
segments (TCP_NODELAY, a pause between them), as a client with a big session ticket or a
post-quantum key share does over a 1500-byte MTU. Each request's SNI, ALPN, version and
cipher must equal nginx's `$ssl_server_name`, `$ssl_alpn_protocol`, `$ssl_protocol`,
`$ssl_cipher`.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx

from .test_wire_vs_accesslog import compare_tls

pytestmark = pytest.mark.capture

ALPN = [f"proto-{i:02d}-" + "x" * 60 for i in range(40)] + ["http/1.1"]


def _openssl_client(port: int, lab_id: str, sni: str, version: str) -> None:
    request = (f"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Lab: {lab_id}\r\n"
               "Connection: close\r\n\r\n")
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni,
         f"-{version}", "-alpn", ",".join(ALPN), "-quiet"],
        input=request.encode(), capture_output=True, timeout=20)
    assert b"200 OK" in out.stdout, out.stderr.decode(errors="replace")[-500:]


def _split_hello_client(port: int, lab_id: str, sni: str, version: ssl.TLSVersion) -> None:
    """TLS over a real socket through memory BIOs: the ClientHello goes out in 3 segments."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(ALPN)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    first = True

    def flush() -> None:
        nonlocal first
        data = outgoing.read()
        if first and data:
            first = False
            third = len(data) // 3
            for piece in (data[:third], data[third:2 * third], data[2 * third:]):
                sock.sendall(piece)
                time.sleep(0.03)  # each piece its own segment
        elif data:
            sock.sendall(data)

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                data = sock.recv(65536)
                assert data, "nginx closed during the handshake"
                incoming.write(data)
        flush()
        tls.write(f"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Lab: {lab_id}\r\n"
                  "Connection: close\r\n\r\n".encode())
        flush()
        got = b""
        while b"ok\n" not in got:
            data = sock.recv(65536)
            if not data:
                break
            incoming.write(data)
            try:
                while chunk := tls.read(65536):
                    got += chunk
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
        assert b"200 OK" in got
    finally:
        sock.close()


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_big_and_split_client_hellos(lab_nginx: LabNginx, capture_factory: Any, syscall_io: bool) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid, syscall_io=syscall_io)
    assert cap.recorder.wire is not None
    port = lab_nginx.tls_port
    sent = 0
    for version in ("tls1_2", "tls1_3"):
        _openssl_client(port, f"big-{version}", "big.example.test", version)
        sent += 1
    for i, tv in enumerate((ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)):
        _split_hello_client(port, f"split-{i}", f"split{i}.example.test", tv)
        sent += 1
    log = lab_nginx.wait_log_lines(sent)
    assert len(log) == sent
    cap.wait_for(sent)
    stats = cap.recorder.counters()
    gave_up = cap.recorder.wire.tracker.gave_up
    reassembled = cap.recorder.wire.tracker.reassembled
    cap.stop()
    problems = compare_tls(log, cap.sink.exchanges)
    print(f"\n{sent} requests with big/split ClientHellos; fields unequal: {len(problems)}; "
          f"wire tls errors {stats.get('wire_tls_errors')}, hellos given up {gave_up}, reassembled from segments {reassembled}; SNIs "
          f"{sorted(str(ex.sni) for ex in cap.sink.exchanges)}")
    assert not problems, "\n".join(problems)
    assert {line["ssl_server_name"] for line in log} == {
        "big.example.test", "split0.example.test", "split1.example.test"}
    assert gave_up == 0 and stats["wire_tls_errors"] == 0
    assert reassembled == 2, "the split clients' hellos came in several segments"
