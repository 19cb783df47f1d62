"""Importing HAR files: a browser's (Chrome DevTools-like), ngxscope's own, and bad ones."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from factories import make_exchange
from ngxscope.model import UpstreamAttempt
from ngxscope.store.exporters import export
from ngxscope.store.import_har import import_har
from ngxscope.store.session import SessionError, SessionWriter

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")

CHROME_HAR: dict[str, Any] = {
    "log": {
        "version": "1.2",
        "creator": {"name": "WebInspector", "version": "537.36"},
        "pages": [{"startedDateTime": "2024-05-01T10:00:00.000Z", "id": "page_1",
                   "title": "https://shop.example.com/", "pageTimings": {"onContentLoad": 310.2,
                                                                         "onLoad": 402.9}}],
        "entries": [
            {
                "_initiator": {"type": "other"}, "_priority": "VeryHigh", "_resourceType": "document",
                "cache": {}, "connection": "443", "pageref": "page_1",
                "request": {
                    "method": "GET", "url": "https://shop.example.com/?ref=mail&x=1",
                    "httpVersion": "http/2.0",
                    "headers": [{"name": ":authority", "value": "shop.example.com"},
                                {"name": ":method", "value": "GET"},
                                {"name": ":path", "value": "/?ref=mail&x=1"},
                                {"name": ":scheme", "value": "https"},
                                {"name": "accept", "value": "text/html"},
                                {"name": "cookie", "value": "sid=abc123"},
                                {"name": "user-agent", "value": "Mozilla/5.0"}],
                    "queryString": [{"name": "ref", "value": "mail"}, {"name": "x", "value": "1"}],
                    "cookies": [{"name": "sid", "value": "abc123", "path": "/", "domain": "shop.example.com",
                                 "expires": None, "httpOnly": True, "secure": True}],
                    "headersSize": -1, "bodySize": 0,
                },
                "response": {
                    "status": 200, "statusText": "", "httpVersion": "http/2.0",
                    "headers": [{"name": "content-encoding", "value": "gzip"},
                                {"name": "content-type", "value": "text/html; charset=utf-8"}],
                    "cookies": [],
                    "content": {"size": 27, "mimeType": "text/html", "compression": 0,
                                "text": "<html><b>hello</b></html>\n\n"},
                    "redirectURL": "", "headersSize": -1, "bodySize": -1, "_transferSize": 412,
                    "_error": None,
                },
                "serverIPAddress": "[2606:4700::6810:84e5]",
                "startedDateTime": "2024-05-01T10:00:00.123Z",
                "time": 187.42,
                "timings": {"blocked": 3.1, "dns": 12.0, "ssl": 20.5, "connect": 40.2, "send": 0.3,
                            "wait": 120.1, "receive": 11.3, "_blocked_queueing": 1.9},
            },
            {
                "cache": {}, "connection": "443", "pageref": "page_1",
                "request": {
                    "method": "POST", "url": "https://shop.example.com/api/cart",
                    "httpVersion": "http/2.0",
                    "headers": [{"name": "content-type", "value": "application/json"}],
                    "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 17,
                    "postData": {"mimeType": "application/json", "text": "{\"item\":42,\"n\":1}"},
                },
                "response": {
                    "status": 201, "statusText": "Created", "httpVersion": "http/2.0",
                    "headers": [{"name": "content-type", "value": "image/png"},
                                {"name": "location", "value": "/api/cart/9"}],
                    "cookies": [],
                    "content": {"size": len(PNG), "mimeType": "image/png",
                                "text": base64.b64encode(PNG).decode(), "encoding": "base64"},
                    "redirectURL": "/api/cart/9", "headersSize": -1, "bodySize": len(PNG),
                },
                "serverIPAddress": "93.184.216.34",
                "startedDateTime": "2024-05-01T12:00:00.500+02:00",
                "time": 50,
                "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 1,
                            "wait": 45, "receive": 4},
            },
            {
                "cache": {},
                "request": {"method": "GET", "url": "http://cdn.example.com:8080/blocked.js",
                            "httpVersion": "", "headers": [], "queryString": [], "cookies": [],
                            "headersSize": -1, "bodySize": 0},
                "response": {"status": 0, "statusText": "", "httpVersion": "", "headers": [],
                             "cookies": [], "content": {"size": 0, "mimeType": "x-unknown"},
                             "redirectURL": "", "headersSize": -1, "bodySize": -1,
                             "_error": "net::ERR_BLOCKED_BY_CLIENT"},
                "startedDateTime": "2024-05-01T10:00:00.900Z", "time": 0,
                "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 0,
                            "wait": 0, "receive": 0},
            },
        ],
    }
}


def write_har(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_chrome_har(tmp_path: Path) -> None:
    s = import_har(write_har(tmp_path / "chrome.har", CHROME_HAR))
    assert s.complete and s.warning is None
    page, post, blocked = s.exchanges
    assert (page.method, page.target, page.host, page.status, page.tls) == (
        "GET", "/?ref=mail&x=1", "shop.example.com", 200, True)
    assert page.version == "HTTP/2.0"
    assert page.server == "[2606:4700::6810:84e5]:443"
    assert page.start == pytest.approx(1714557600.123)
    assert page.duration_ms == pytest.approx(187.42, abs=0.01)
    assert [k for k, _ in page.request_headers] == ["accept", "cookie", "user-agent"]
    assert gzip.decompress(page.response_body) == b"<html><b>hello</b></html>\n\n"  # wire form again
    assert post.request_body == b'{"item":42,"n":1}' and post.request_body_size == 17
    assert post.response_body == PNG and post.response_body_size == len(PNG)
    assert post.start == pytest.approx(1714557600.5)  # +02:00 honoured
    assert post.server == "93.184.216.34:443" and post.conn_id == "443"
    assert blocked.status is None and blocked.server.endswith(":8080") and not blocked.tls


def test_har_input_exports_to_every_format(tmp_path: Path) -> None:
    src = write_har(tmp_path / "chrome.har", CHROME_HAR)
    out = tmp_path / "x.jsonl"
    assert export(src, "jsonl", out, redact=False) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["target"] for r in rows] == ["/?ref=mail&x=1", "/api/cart", "/blocked.js"]  # by start
    for fmt in ("har", "csv", "pcapng"):
        assert export(src, fmt, tmp_path / f"x.{fmt}") == 3
    red = tmp_path / "red.jsonl"
    export(src, "jsonl", red)
    assert b"abc123" not in red.read_bytes()


def test_own_export_round_trips(tmp_path: Path) -> None:
    exs = [
        make_exchange(upstream=[UpstreamAttempt(addr="10.0.0.1:80", status=502, group="app"),
                                UpstreamAttempt(addr="10.0.0.2:80", status=200, header_ms=3.0)],
                      server_block="shop.example.test", remote="192.0.2.7", nginx_end=1733530000.123,
                      subrequest_upstream=[UpstreamAttempt(addr="10.0.0.9:80", status=200, group="auth")]),
        make_exchange(method="POST", target="/up", request_body=bytes(range(256)), host="h",
                      request_headers=[("Host", "h"), ("Content-Type", "application/octet-stream")],
                      tls=True, error="something"),
    ]
    src = tmp_path / "s.ngxs"
    with SessionWriter(src, {}) as w:
        for ex in exs:
            w.write_exchange(ex)
    har = tmp_path / "s.har"
    export(src, "har", har, redact=False)
    back = import_har(har).exchanges
    for a, b in zip(exs, back, strict=True):
        for name in ("id", "pid", "client", "server", "tls", "conn_id", "method", "target",
                     "version", "host", "status", "reason", "request_headers", "response_headers",
                     "request_body", "response_body", "request_body_size", "response_body_size",
                     "upstream", "error", "nginx_ms", "server_block", "request_bytes",
                     "response_bytes", "remote", "nginx_end", "subrequest_upstream"):
            assert getattr(a, name) == getattr(b, name), name
        assert b.start == pytest.approx(a.start, abs=0.001)
        assert b.duration_ms == pytest.approx(a.duration_ms, abs=0.002)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "is empty"),
        (b"{", "not a valid HAR file"),
        (b'{"log": {}}', "not a HAR file (no log.entries)"),
        (b'{"log": {"entries": [1]}}', "entry 0 is not an object"),
        (b'{"log": {"entries": [{"request": {}}]}}', "entry 0.startedDateTime is missing"),
        (json.dumps({"log": {"entries": [{"startedDateTime": "yesterday", "request": {}}]}}).encode(),
         "not an ISO 8601 time"),
        (json.dumps({"log": {"entries": [{"startedDateTime": "2024-01-01T00:00:00Z",
                                          "request": {"method": "GET", "url": 5}}]}}).encode(),
         "request.url has the wrong type"),
        (b"\xff\xfe{", "not a HAR file (not UTF-8"),
    ],
)
def test_bad_har_is_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.har"
    path.write_bytes(content)
    with pytest.raises(SessionError) as err:
        import_har(path)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="No such file"):
        import_har(tmp_path / "nope.har")
    with pytest.raises(SessionError, match="directory"):
        import_har(tmp_path)

