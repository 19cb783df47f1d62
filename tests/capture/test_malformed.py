"""Bad input from clients: each malformed request is an error exchange matching nginx's 400.

Raw sockets send what no HTTP client would (garbage, a bad header line, a head too large
for nginx's buffers, a TLS ClientHello on the plain port, binary junk), each on its own
connection, while ordinary traffic runs on others. Each shows up as one flagged exchange
whose status and response size are nginx's (`$status`, `$bytes_sent`); the ordinary
requests still match the access log field by field.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

from ngxscope.lab.config import parse_log_line
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic

from .truth import compare


def _client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


CASES: dict[str, bytes] = {
    "garbage": b"GARBAGE\r\n\r\n",
    "bad header line": b"GET /ok HTTP/1.1\r\nHost: localhost\r\nthis is not a header\r\n\r\n",
    "huge header": b"GET /big HTTP/1.1\r\nHost: localhost\r\nX-Huge: " + b"h" * 40000 + b"\r\n\r\n",
    "tls on plain port": _client_hello(),
    "binary junk": bytes(range(256)) * 3 + b"\r\n\r\n",
}


def _send_raw(port: int, data: bytes) -> tuple[str, bytes]:
    """Send `data` on a fresh connection; return our address and all nginx answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        host, port_ = sock.getsockname()[:2]
        addr = f"{host}:{port_}"
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return addr, b"".join(chunks)


def test_malformed_requests_match_nginx_400(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    assert cap.recorder.assembler is not None
    cap.recorder.assembler.midway_window = 0.0  # these connections start after the attach
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    ordinary_sent: list[int] = []
    normal = threading.Thread(target=lambda: ordinary_sent.append(traffic.run_mix(rounds=2, concurrency=2)))
    normal.start()
    sent: dict[str, tuple[str, bytes]] = {}
    for name, data in CASES.items():
        sent[name] = _send_raw(lab_nginx.plain_port, data)
        time.sleep(0.05)
    normal.join(60)
    assert ordinary_sent, "the ordinary traffic did not finish"
    # nginx writes a line when it is done with a request, which can be well after the client
    # saw the answer (a lingering close on a 400, a loaded box): wait for all of them
    lab_nginx.wait_log_lines(ordinary_sent[0] + len(CASES), timeout=30)
    # nginx's escape=json passes bytes >= 0x80 through raw: not UTF-8 (LabNginx.read_access_log
    # would raise), so parse the lines as latin-1 here
    raw = lab_nginx.access_log_path.read_bytes().decode("latin-1")
    log = [parse_log_line(ln) for ln in raw.split("\n") if ln.strip()]
    exchanges = cap.wait_for(len(log))
    cap.stop()

    # a connection is its address pair: the kernel may hand a later connection to the TLS
    # port the same client port (another destination), so the client port alone is not one
    server = f"127.0.0.1:{lab_nginx.plain_port}"
    by_conn = {(line["client"], line["server"]): line for line in log}
    report = []
    problems = []
    for name, (addr, answer) in sent.items():
        line = by_conn.get((addr, server))
        found = [ex for ex in exchanges if ex.client == addr and ex.server == server]
        if line is None:
            problems.append(f"{name}: nginx logged nothing for {addr} (answer {answer[:40]!r})")
            continue
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} exchanges for {addr}")
            continue
        ex = found[0]
        assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:60])
        if line["status"] != 400 or ex.status != 400:
            problems.append(f"{name}: status {ex.status}, log {line['status']}")
        if ex.response_bytes != line["bytes_sent"] or ex.response_bytes != len(answer):
            problems.append(f"{name}: response_bytes {ex.response_bytes}, log {line['bytes_sent']}, "
                            f"client got {len(answer)}")
        if name == "huge header":
            # well-formed HTTP/1.1 that only nginx's buffers (4 x 8k) refuse: the decoder
            # parses it (method, target) and the error is nginx's 400
            if ex.error or (ex.method, ex.target) != ("GET", "/big"):
                problems.append(f"{name}: {ex.method} {ex.target} error {ex.error!r}")
        elif not ex.error:
            problems.append(f"{name}: not flagged as an error")
        if ex.pid != int(line["pid"]) or ex.tls:
            problems.append(f"{name}: pid/tls {ex.pid}/{ex.tls} vs log {line['pid']}")
        # nginx counts what it parsed ($request_length), read from its request struct
        if ex.request_bytes != line["request_length"]:
            problems.append(f"{name}: request_bytes {ex.request_bytes} != $request_length {line['request_length']}")
        report.append(f"{name}: status {ex.status}=log {line['status']}, response_bytes "
                      f"{ex.response_bytes}=$bytes_sent {line['bytes_sent']}, request_bytes "
                      f"{ex.request_bytes} vs $request_length {line['request_length']} "
                      f"(sent {len(CASES[name])}); error {ex.error!r}")
    assert not problems, "\n".join(problems + report)
    # the ordinary requests are untouched by the junk on other connections
    ordinary = [line for line in log if line.get("lab_id")]
    assert len(ordinary) == len(log) - len(CASES)
    mismatches = compare(ordinary, exchanges)
    assert not mismatches, "\n".join(mismatches[:30])
    print("\n" + "\n".join(report) + f"\nordinary requests alongside: {len(ordinary)}, 0 mismatches")
