"""WebSocket through nginx (``/ws/`` → the backends' RFC 6455 echo) against the access log.

The exchange ends at the upgrade (status 101, the 101 head as its response); the tunnel is
summarised per direction when nginx finishes the request, whose log line counts the head
and every relayed byte in $bytes_sent. Plain and TLS. Real nginx, real eBPF.
"""

from __future__ import annotations

from typing import Any

from ngxscope.decode.websocket import WsTunnel
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.wsclient import ws_session

from .test_capture_vs_accesslog import _pairs


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
    pairs = _pairs(log, exchanges)
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
        # $bytes_sent = the 101 head (the exchange) + every byte relayed to the client
        assert ex.response_bytes + ws.outbound.wire_bytes == line["bytes_sent"], where
        assert ws.inbound.wire_bytes == sent[where].sent_bytes, where
        n = len(sent[where].echoed)
        assert (ws.inbound.messages, ws.outbound.messages) == (n, n), where
        assert ws.inbound.control == 2 and ws.outbound.control == 2  # ping + close, pong + close
        assert ws.inbound.closed and ws.outbound.closed
        # the exchange ends at the upgrade; nginx's $request_time covers the tunnel
        assert ex.end <= float(line["msec"]) + 0.002
        assert abs((end - ex.start) - float(line["request_time"])) < 0.02, where
        print(f"\n{where}: log status {line['status']} request_length {line['request_length']} bytes_sent "
              f"{line['bytes_sent']} request_time {line['request_time']}; captured 101 head {ex.response_bytes} + "
              f"tunnel out {ws.outbound.wire_bytes}, in {ws.inbound.wire_bytes}, messages {ws.inbound.messages}/{ws.outbound.messages}")
    events = [e for e in cap.sink.events if e.kind == "websocket"]
    assert len(events) == 2 and "client → nginx 3 messages" in events[0].detail
