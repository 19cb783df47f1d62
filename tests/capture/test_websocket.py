"""WebSocket through nginx (``/ws/`` → the backends' RFC 6455 echo) against the access log.

The upgrade is one exchange (status 101), handed out when nginx finishes the request: its
response bytes are the 101 head and every byte relayed to the client, as $bytes_sent counts
them, and it ends when the tunnel does; the tunnel is summarised per direction. Plain and
TLS, WebSocket and another upgrade protocol with a large tunnelled payload. Real nginx,
real eBPF.
"""

from __future__ import annotations

import socket
from typing import Any

from ngxscope.decode.websocket import WsTunnel
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.wsclient import ws_session

from .truth import by_lab_id


def test_websocket_upgrade_and_tunnel_match_access_log(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    tunnels: list[tuple[WsTunnel, float]] = []
    assert cap.recorder.assembler is not None
    cap.recorder.assembler.on_websocket = lambda ws, ts: tunnels.append((ws, ts))
    plain = ws_session(lab_nginx.plain_port, [b"hello world", b"x" * 300, b"y" * 70000], lab_id="w1")
    tls = ws_session(lab_nginx.tls_port, [b"hello tls", b"z" * 200], tls=True, lab_id="w2")
    assert plain.status == tls.status == 101
    assert [len(m) for m in plain.echoed] == [11, 300, 70000] and plain.pongs == 1
    log = lab_nginx.wait_log_lines(2)
    exchanges = cap.wait_for(2)
    cap.stop()
    pairs = by_lab_id(log, exchanges)[0]
    assert len(pairs) == 2 and len(exchanges) == 2, "one exchange per upgrade, no junk from the frames"
    by_id = {ws.exchange_id: (ws, ts) for ws, ts in tunnels}
    sent = {"w1": plain, "w2": tls}
    for line, ex in pairs:
        where = line["lab_id"]
        assert (ex.status, line["status"]) == (101, 101), where
        assert ex.request_bytes == line["request_length"], where
        assert ex.pid == line["pid"] and ex.client == line["client"] and ex.error is None, where
        assert ex.tls == (line["https"] == "on")
        assert ex.upstream and ex.upstream[0].status == 101 and ex.upstream[0].addr == line["upstream_addr"]
        ws, end = by_id[ex.id]
        # $bytes_sent = the 101 head + every byte relayed to the client
        assert ex.response_bytes == line["bytes_sent"], where
        assert ex.response_body_size == 0 and ex.response_bytes > ws.outbound.wire_bytes, where
        assert ws.inbound.wire_bytes == sent[where].sent_bytes, where
        n = len(sent[where].echoed)
        assert (ws.inbound.messages, ws.outbound.messages) == (n, n), where
        assert ws.inbound.control == 2 and ws.outbound.control == 2  # ping + close, pong + close
        assert ws.inbound.closed and ws.outbound.closed
        # the exchange ends with the tunnel, as nginx's $request_time does
        assert abs(ex.end - float(line["msec"])) < 0.05, where
        assert ex.nginx_ms is not None and abs(ex.nginx_ms - float(line["request_time"]) * 1000) <= 1.0, where
        assert abs((end - ex.start) - float(line["request_time"])) < 0.02, where
        print(f"\n{where}: log status {line['status']} request_length {line['request_length']} bytes_sent "
              f"{line['bytes_sent']} request_time {line['request_time']}; captured {ex.response_bytes} = 101 head + "
              f"tunnel out {ws.outbound.wire_bytes}, in {ws.inbound.wire_bytes}, messages {ws.inbound.messages}/{ws.outbound.messages}")
    events = [e for e in cap.sink.events if e.kind == "websocket"]
    assert len(events) == 2 and "client → nginx 3 messages" in events[0].detail


def _raw_upgrade(port: int, payload: bytes, lab_id: str) -> tuple[bytes, int]:
    """Upgrade to a non-WebSocket protocol through /ws/ and send `payload` through the raw
    echo tunnel; returns (the 101 head, bytes echoed back)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: lab-raw\r\n"
                     b"Connection: Upgrade\r\nX-Lab: " + lab_id.encode() + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            assert chunk, "no 101"
            buf += chunk
        head, _, echoed = buf.partition(b"\r\n\r\n")
        got = len(echoed)
        for i in range(0, len(payload), 65536):
            sock.sendall(payload[i : i + 65536])
            sock.settimeout(0.05)
            try:
                while True:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    got += len(data)
            except TimeoutError:
                pass
            sock.settimeout(10)
        while got < len(payload):
            data = sock.recv(1 << 20)
            if not data:
                break
            got += len(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
        return head, got
    finally:
        sock.close()


def test_other_upgrade_protocol_large_tunnel(lab_nginx: LabNginx, capture_factory: Any) -> None:
    """An upgrade to another protocol with 540 KB through the tunnel: one exchange whose
    response bytes equal $bytes_sent (head + tunnel), in both I/O modes."""
    for syscall_io in (True, False):
        cap = capture_factory(pid=lab_nginx.master_pid, syscall_io=syscall_io)
        before = lab_nginx.log_line_count()
        lab_id = f"raw-{syscall_io}"
        head, echoed = _raw_upgrade(lab_nginx.plain_port, bytes(range(256)) * 2112, lab_id)
        assert head.startswith(b"HTTP/1.1 101 ") and echoed == 256 * 2112
        log = lab_nginx.wait_log_lines(1, start=before)
        exchanges = cap.wait_for(1)
        cap.stop()
        pairs = by_lab_id(log, exchanges)[0]
        assert len(pairs) == 1 and len(exchanges) == 1
        line, ex = pairs[0]
        assert (ex.status, line["status"]) == (101, 101)
        assert line["bytes_sent"] > 540_000
        assert ex.response_bytes == line["bytes_sent"] and ex.request_bytes == line["request_length"]
        assert ex.error is None and ex.target == line["uri"] == "/ws/echo"
        events = [e for e in cap.sink.events if e.kind == "websocket"]
        assert len(events) == 1 and f"lab-raw tunnel of exchange #{ex.id}" in events[0].detail
        assert f"nginx → client {256 * 2112} bytes" in events[0].detail
        print(f"\n{lab_id}: log bytes_sent {line['bytes_sent']} = captured {ex.response_bytes}; {events[0].detail}")
