"""File ▸ Open / `ngxscope open` of what other tools captured: HAR and pcap/pcapng."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dpkt

from ngxscope.ui.sessionload import load_session, load_with_dialog

MITMPROXY_LIKE_HAR = {"log": {"version": "1.2", "creator": {"name": "mitmproxy", "version": "11"},
                              "pages": [], "entries": [{
    "startedDateTime": "2024-05-01T10:00:00.123456+00:00", "time": 12.5,
    "request": {"method": "POST", "url": "http://api.example.test:8080/v1/items?x=1",
                "httpVersion": "HTTP/1.1", "cookies": [], "queryString": [{"name": "x", "value": "1"}],
                "headers": [{"name": "Host", "value": "api.example.test:8080"},
                            {"name": "Content-Type", "value": "application/json"}],
                "postData": {"mimeType": "application/json", "text": "{\"a\": 1}"},
                "headersSize": 120, "bodySize": 8},
    "response": {"status": 503, "statusText": "Service Unavailable", "httpVersion": "HTTP/1.1",
                 "cookies": [], "headers": [{"name": "Content-Type", "value": "text/plain"}],
                 "content": {"size": 4, "mimeType": "text/plain", "text": "busy"},
                 "redirectURL": "", "headersSize": 80, "bodySize": 4},
    "cache": {}, "timings": {"send": 1, "wait": 10, "receive": 1.5},
    "serverIPAddress": "10.0.0.8", "comment": "seen in staging"}]}}


def _pcap(path: Path) -> Path:
    c, s = (b"\x7f\x00\x00\x01", 40001), (b"\x7f\x00\x00\x01", 8080)

    def pkt(src: Any, dst: Any, seq: int, data: bytes = b"", flags: int = dpkt.tcp.TH_ACK) -> bytes:
        tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq, flags=flags, data=data)
        ip = dpkt.ip.IP(src=src[0], dst=dst[0], p=dpkt.ip.IP_PROTO_TCP, data=tcp)
        ip.len = len(bytes(ip))
        return bytes(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip))

    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f)
        w.writepkt(pkt(c, s, 0, flags=dpkt.tcp.TH_SYN), ts=1.0)
        w.writepkt(pkt(c, s, 1, b"GET /health HTTP/1.1\r\nHost: lab\r\n\r\n"), ts=1.1)
        w.writepkt(pkt(s, c, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"), ts=1.2)
    return path


def test_open_har_and_pcapng(window: Any, tmp_path: Path) -> None:
    har = tmp_path / "flows.har"
    har.write_text(json.dumps(MITMPROXY_LIKE_HAR))
    result = load_session(window, str(har))
    assert result.total == 1 and window.proxy.rowCount() == 1
    ex = window.store[0]
    assert (ex.method, ex.target, ex.status, ex.note) == ("POST", "/v1/items?x=1", 503,
                                                          "seen in staging")
    assert "har flows.har (mitmproxy 11)" in window.windowTitle()
    result = load_with_dialog(window, str(_pcap(tmp_path / "lab.pcapng")))
    assert result is not None and result.total == 1
    ex = window.store[0]
    assert (ex.method, ex.target, ex.status, ex.response_body) == ("GET", "/health", 200, b"ok\n")
    assert "pcapng lab.pcapng" in window.windowTitle()
