"""The pcapng export with the real handshake packets the socket filter kept, read by tshark.

Real nginx, real eBPF: TLS 1.2 and 1.3 connections (keep-alive, resumed), a plain one and a
failed handshake are captured; the session is exported to pcapng. tshark must dissect every
request (method, URI, status as the session holds them), show no malformed packet, find each
TLS connection's real ClientHello with the SNI nginx logged, its real SYN / SYN-ACK with the
same ports, and the failed handshake's alert.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.store.exporters import export

from .test_wire_vs_accesslog import _ctx, _requests, _wait

pytestmark = pytest.mark.capture


def _tshark(path: Path, *args: str) -> list[list[str]]:
    res = subprocess.run(["tshark", "-r", str(path), *args], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def test_pcapng_has_the_real_handshakes(lab_nginx: LabNginx, capture_factory: Any, tmp_path: Path) -> None:
    from store.test_export_pcapng import expected, http_triples, write_session

    cap = capture_factory(pid=lab_nginx.master_pid)
    assert cap.recorder.wire is not None
    port = lab_nginx.tls_port
    sent = 0
    for i, version in enumerate(("1.2", "1.3")):
        ctx = _ctx(version, ["http/1.1"])
        session = _requests(port, ctx, f"host{i}.example.test", [f"p{i}-0", f"p{i}-1"])
        _requests(port, ctx, f"host{i}.example.test", [f"p{i}-r"], session=session)
        sent += 3
    with socket.create_connection(("127.0.0.1", lab_nginx.plain_port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Lab: plain\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    sent += 1
    old = _ctx("1.2", None, "ECDHE-ECDSA-AES128-GCM-SHA256")  # nginx has an RSA key: refused
    with pytest.raises(ssl.SSLError), old.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                                      server_hostname="localhost"):
        pass
    log = lab_nginx.wait_log_lines(sent)
    assert len(log) == sent
    cap.wait_for(sent)
    records = _wait(cap, 1)
    cap.stop()
    exchanges = cap.sink.exchanges
    firsts = [ex for ex in exchanges if ex.wire_packets]
    assert len(firsts) == 5, [(ex.client, ex.conn_seq) for ex in exchanges]  # one per connection
    src = write_session(tmp_path / "s.ngxs", exchanges + records)
    out = tmp_path / "s.pcapng"
    assert export(src, "pcapng", out) == len(exchanges) + len(records)

    assert http_triples(out) == expected(exchanges)
    bad = _tshark(out, "-Y", "_ws.malformed || _ws.expert.severity >= error")
    assert bad == [], bad[:5]
    hellos = _tshark(out, "-Y", "tls.handshake.type == 1", "-T", "fields", "-e", "tcp.srcport",
                     "-e", "tls.handshake.extensions_server_name")
    want = {(ex.client.rsplit(":", 1)[1], ex.sni or "") for ex in firsts if ex.tls}
    want |= {(r.client.rsplit(":", 1)[1], r.sni or "") for r in records}
    assert {(p, n) for p, n in hellos} == want
    assert {n for _p, n in hellos} >= {"host0.example.test", "host1.example.test"}
    syns = _tshark(out, "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0", "-T", "fields", "-e", "tcp.srcport",
                   "-e", "frame.comment")
    assert {p for p, _c in syns} == {ex.client.rsplit(":", 1)[1] for ex in firsts + records}
    assert all("wire=1" in c for _p, c in syns), "the real SYNs, no synthetic one"
    alerts = _tshark(out, "-Y", "tls.alert_message", "-T", "fields", "-e", "tls.alert_message.desc")
    assert ["40"] in alerts, alerts  # handshake_failure, from the failed client's record
    print(f"\npcapng: {len(exchanges)} exchanges, {len(hellos)} real ClientHellos, {len(syns)} real SYNs, "
          f"alerts {alerts}")
