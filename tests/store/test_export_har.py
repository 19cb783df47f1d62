"""HAR 1.2 export: schema-valid, honest timings, decoded content, ngxscope's custom fields."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from capture.conftest import capture_factory  # noqa: F401 - the fixture, for the real capture
from factories import BASE_TIME, make_exchange
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.export_har import har_entry, iso_time
from ngxscope.store.exporters import export
from ngxscope.store.session import SessionWriter

_NAME_VALUE = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {"name": {"type": "string"}, "value": {"type": "string"},
                   "comment": {"type": "string"}},
}
_TIMING = {"type": "number", "minimum": -1}
_ISO8601 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"

HAR_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/)",
    "type": "object",
    "required": ["log"],
    "properties": {"log": {"$ref": "#/definitions/log"}},
    "definitions": {
        "log": {
            "type": "object",
            "required": ["version", "creator", "entries"],
            "properties": {
                "version": {"type": "string", "const": "1.2"},
                "creator": {"$ref": "#/definitions/creator"},
                "browser": {"$ref": "#/definitions/creator"},
                "pages": {"type": "array", "items": {"$ref": "#/definitions/page"}},
                "entries": {"type": "array", "items": {"$ref": "#/definitions/entry"}},
                "comment": {"type": "string"},
            },
        },
        "creator": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "comment": {"type": "string"}},
        },
        "page": {
            "type": "object",
            "required": ["startedDateTime", "id", "title", "pageTimings"],
            "properties": {
                "startedDateTime": {"type": "string", "pattern": _ISO8601},
                "id": {"type": "string"},
                "title": {"type": "string"},
                "pageTimings": {"type": "object", "properties": {
                    "onContentLoad": _TIMING, "onLoad": _TIMING, "comment": {"type": "string"}}},
            },
        },
        "entry": {
            "type": "object",
            "required": ["startedDateTime", "time", "request", "response", "cache", "timings"],
            "properties": {
                "pageref": {"type": "string"},
                "startedDateTime": {"type": "string", "pattern": _ISO8601},
                "time": {"type": "number", "minimum": 0},
                "request": {"$ref": "#/definitions/request"},
                "response": {"$ref": "#/definitions/response"},
                "cache": {"$ref": "#/definitions/cache"},
                "timings": {"$ref": "#/definitions/timings"},
                "serverIPAddress": {"type": "string"},
                "connection": {"type": "string"},
                "comment": {"type": "string"},
            },
        },
        "request": {
            "type": "object",
            "required": ["method", "url", "httpVersion", "cookies", "headers", "queryString",
                         "headersSize", "bodySize"],
            "properties": {
                "method": {"type": "string"},
                "url": {"type": "string"},
                "httpVersion": {"type": "string"},
                "cookies": {"type": "array", "items": {"$ref": "#/definitions/cookie"}},
                "headers": {"type": "array", "items": _NAME_VALUE},
                "queryString": {"type": "array", "items": _NAME_VALUE},
                "postData": {"$ref": "#/definitions/postData"},
                "headersSize": {"type": "integer", "minimum": -1},
                "bodySize": {"type": "integer", "minimum": -1},
                "comment": {"type": "string"},
            },
        },
        "response": {
            "type": "object",
            "required": ["status", "statusText", "httpVersion", "cookies", "headers", "content",
                         "redirectURL", "headersSize", "bodySize"],
            "properties": {
                "status": {"type": "integer"},
                "statusText": {"type": "string"},
                "httpVersion": {"type": "string"},
                "cookies": {"type": "array", "items": {"$ref": "#/definitions/cookie"}},
                "headers": {"type": "array", "items": _NAME_VALUE},
                "content": {"$ref": "#/definitions/content"},
                "redirectURL": {"type": "string"},
                "headersSize": {"type": "integer", "minimum": -1},
                "bodySize": {"type": "integer", "minimum": -1},
                "comment": {"type": "string"},
            },
        },
        "cookie": {
            "type": "object",
            "required": ["name", "value"],
            "properties": {
                "name": {"type": "string"}, "value": {"type": "string"},
                "path": {"type": "string"}, "domain": {"type": "string"},
                "expires": {"type": ["string", "null"]},
                "httpOnly": {"type": "boolean"}, "secure": {"type": "boolean"},
                "comment": {"type": "string"},
            },
        },
        "postData": {
            "type": "object",
            "required": ["mimeType"],
            "properties": {
                "mimeType": {"type": "string"},
                "text": {"type": "string"},
                "params": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string"}, "value": {"type": "string"},
                                   "fileName": {"type": "string"},
                                   "contentType": {"type": "string"},
                                   "comment": {"type": "string"}}}},
                "comment": {"type": "string"},
            },
        },
        "content": {
            "type": "object",
            "required": ["size", "mimeType"],
            "properties": {
                "size": {"type": "integer"},
                "compression": {"type": "integer"},
                "mimeType": {"type": "string"},
                "text": {"type": "string"},
                "encoding": {"type": "string"},
                "comment": {"type": "string"},
            },
        },
        "cache": {
            "type": "object",
            "properties": {
                "beforeRequest": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/cacheEntry"}]},
                "afterRequest": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/cacheEntry"}]},
                "comment": {"type": "string"},
            },
        },
        "cacheEntry": {
            "type": "object",
            "required": ["lastAccess", "eTag", "hitCount"],
            "properties": {"expires": {"type": "string"}, "lastAccess": {"type": "string"},
                           "eTag": {"type": "string"}, "hitCount": {"type": "integer"},
                           "comment": {"type": "string"}},
        },
        "timings": {
            "type": "object",
            "required": ["send", "wait", "receive"],
            "properties": {
                "blocked": _TIMING, "dns": _TIMING, "connect": _TIMING, "send": _TIMING,
                "wait": _TIMING, "receive": _TIMING, "ssl": _TIMING,
                "comment": {"type": "string"},
            },
        },
    },
}
"""HAR 1.2 as a JSON Schema, written from the spec's object descriptions (required fields
and types), in the manner of the har-schema package."""


def validate_har(doc: Any) -> None:
    jsonschema.Draft7Validator.check_schema(HAR_SCHEMA)
    jsonschema.Draft7Validator(HAR_SCHEMA).validate(doc)


def write_session(path: Path, exchanges: list[Exchange]) -> Path:
    with SessionWriter(path, {"pid": 1}) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    return path


def varied() -> list[Exchange]:
    """Exchanges covering what HAR must express."""
    page = b"<html>" + b"hello world " * 200 + b"</html>"
    gz = gzip.compress(page)
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    binary = bytes(range(256)) * 4
    return [
        make_exchange(target="/page?q=a%20b&x=", response_body=gz, response_headers=[
            ("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(gz))), ("Set-Cookie", "sid=abc; Path=/; HttpOnly; Secure")]),
        make_exchange(target="/stream", response_body=chunked, response_headers=[
            ("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")]),
        make_exchange(target="/img.bin", tls=True, response_body=binary, response_headers=[
            ("Content-Type", "application/octet-stream"), ("Content-Length", str(len(binary)))]),
        make_exchange(method="POST", target="/login", request_body=b"user=bob&pass=hunter2",
                      request_headers=[("Host", "shop.example.test"),
                                       ("Content-Type", "application/x-www-form-urlencoded")]),
        make_exchange(method="POST", target="/upload", request_body=binary[:300],
                      request_headers=[("Host", "a"), ("Content-Type", "application/octet-stream")]),
        make_exchange(target="/big", truncated=True, response_body=b"x" * 100,
                      response_body_size=5000, response_headers=[("Content-Length", "5000")]),
        make_exchange(target="/file", sendfile_bytes=4096, response_body=b"",
                      response_body_size=4096, response_headers=[("Content-Length", "4096")]),
        make_exchange(target="/noanswer", status=None, reason="", response_headers=[],
                      response_body=b"", response_bytes=0, error="client closed the connection"),
        make_exchange(target="/retry", upstream=[
            UpstreamAttempt(addr="10.0.0.1:80", status=502, connect_ms=1.0, header_ms=2.0,
                            duration_ms=2.5, start=BASE_TIME + 10.0001),
            UpstreamAttempt(addr="10.0.0.2:80", status=200, connect_ms=0.5, header_ms=4.0,
                            duration_ms=6.0, start=BASE_TIME + 10.004),
        ], start=BASE_TIME + 10.0, end=BASE_TIME + 10.0125),
        make_exchange(method="HEAD", target="/head", response_body=b"",
                      response_headers=[("Content-Length", "1234")]),
    ]


def test_factory_session_validates_and_says_what_happened(tmp_path: Path) -> None:
    exchanges = varied()
    src = write_session(tmp_path / "s.ngxs", exchanges)
    out = tmp_path / "s.har"
    assert export(src, "har", out, redact=False) == len(exchanges)
    doc = json.loads(out.read_bytes())
    validate_har(doc)
    entries = doc["log"]["entries"]
    assert doc["log"]["creator"]["name"] == "ngxscope"
    assert [e["startedDateTime"] for e in entries] == sorted(e["startedDateTime"] for e in entries)
    by_path = {e["request"]["url"].split("://", 1)[1].split("/", 1)[1].split("?")[0]: e
               for e in entries}
    for e, ex in zip(entries, sorted(exchanges, key=lambda x: (x.start, x.id)), strict=True):
        t = e["timings"]
        assert (t["blocked"], t["dns"], t["connect"], t["ssl"]) == (-1, -1, -1, -1)
        assert e["time"] == pytest.approx(sum(v for v in t.values() if v >= 0), abs=0.002)
        assert e["time"] == pytest.approx(ex.duration_ms, abs=0.002)
        assert e["startedDateTime"] == iso_time(ex.start)
        assert e["_pid"] == e["_worker"] == ex.pid
        assert e["connection"] == ex.conn_id
        assert e["serverIPAddress"] == "127.0.0.1"
        assert e["request"]["httpVersion"] == "HTTP/1.1"
    page = by_path["page"]
    assert page["response"]["content"]["text"].startswith("<html>hello world")
    assert page["response"]["content"]["size"] == len(b"<html>" + b"hello world " * 200 + b"</html>")
    assert page["response"]["content"]["compression"] > 0
    assert page["request"]["queryString"] == [{"name": "q", "value": "a b"}, {"name": "x", "value": ""}]
    assert page["response"]["cookies"][0] == {"name": "sid", "value": "abc", "path": "/",
                                              "httpOnly": True, "secure": True}
    assert page["request"]["cookies"][0]["name"] == "session"
    assert by_path["stream"]["response"]["content"]["text"] == "hello world"
    img = by_path["img.bin"]
    assert img["request"]["url"].startswith("https://shop.example.test/")
    assert img["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(img["response"]["content"]["text"]) == bytes(range(256)) * 4
    login = by_path["login"]["request"]["postData"]
    assert login["mimeType"] == "application/x-www-form-urlencoded"
    assert {"name": "user", "value": "bob"} in login["params"]
    upload = by_path["upload"]["request"]["postData"]
    assert upload["encoding"] == "base64"
    assert base64.b64decode(upload["text"]) == (bytes(range(256)) * 4)[:300]
    big = by_path["big"]
    assert big["_truncated"] is True and big["response"]["bodySize"] == 5000
    assert big["response"]["content"]["size"] == 5000
    assert by_path["file"]["_sendfileBytes"] == 4096 and "text" not in by_path["file"]["response"]["content"]
    noanswer = by_path["noanswer"]
    assert noanswer["response"]["status"] == 0 and noanswer["_error"] == "client closed the connection"
    assert noanswer["response"]["bodySize"] == -1
    retry = by_path["retry"]
    assert [a["addr"] for a in retry["_upstream"]] == ["10.0.0.1:80", "10.0.0.2:80"]
    # wait: until the last attempt's header (3.99 ms + 4 ms), receive: the rest of 12.5 ms
    assert retry["timings"]["wait"] == pytest.approx(8.0, abs=0.01)
    assert retry["timings"]["receive"] == pytest.approx(4.5, abs=0.01)
    assert by_path["head"]["response"]["bodySize"] == 0


def test_entry_for_an_unparsed_request_is_valid() -> None:
    ex = make_exchange(method="", target="", version="", status=None, request_headers=[],
                       response_headers=[], request_body=b"\x16\x03\x01garbage", response_body=b"",
                       error="not HTTP")
    entry = har_entry(ex)
    validate_har({"log": {"version": "1.2", "creator": {"name": "t", "version": "1"},
                          "entries": [entry]}})
    assert entry["request"]["headersSize"] == -1 and entry["_error"] == "not HTTP"


def test_stdout_and_empty_session(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    src = write_session(tmp_path / "empty.ngxs", [])
    assert export(src, "har", "-") == 0
    doc = json.loads(capfdbinary.readouterr().out)
    validate_har(doc)
    assert doc["log"]["entries"] == []


def test_real_capture_validates(lab_nginx: LabNginx, capture_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    cap = capture_factory(pid=lab_nginx.master_pid)
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=1, concurrency=2)
    exchanges = cap.wait_for(sent)
    cap.stop()
    src = write_session(tmp_path / "real.ngxs", exchanges)
    out = tmp_path / "real.har"
    assert export(src, "har", out) == len(exchanges) >= sent
    doc = json.loads(out.read_bytes())
    validate_har(doc)
    entries = doc["log"]["entries"]
    assert {e["request"]["url"].split("/", 3)[3] for e in entries} >= {"api/chunked?n=5", "204"}
    chunked = next(e for e in entries if e["request"]["url"].endswith("/api/chunked?n=5"))
    assert "\r\n" not in chunked["response"]["content"]["text"][:8]  # de-chunked
    uploads = [e for e in entries if e["request"]["method"] == "POST"]
    assert {e["request"]["bodySize"] for e in uploads} >= {1000, 100 * 1024}
    for e in entries:  # HAR: `ssl` is part of `connect`, so not summed again
        t = e["timings"]
        assert e["time"] == pytest.approx(
            sum(v for k, v in t.items() if v >= 0 and k != "ssl"), abs=0.002)
        if e["_connSeq"] > 0:
            assert (t["connect"], t["ssl"]) == (-1, -1)  # the connection was set up before
        elif e["_tls"]:
            assert t["connect"] >= t["ssl"] > 0  # the socket filter saw the handshakes
        else:
            assert t["connect"] > 0 and t["ssl"] == -1
    assert {e["_tls"] for e in entries} == {True, False}
