"""HISTORICAL — generated the frozen sample sessions once each; never edit existing parts.

`session-vN.ngxs` are committed binary files that every future ngxscope must read exactly
as `tests/store/test_compat.py` asserts. When the format changes, append a `vN_records()`
for the new version and run this script: it writes only the files that do not exist yet.
The records are written literally here (not with `SessionWriter`) so that this script
documents each format on its own. Byte-exact output needs a fixed gzip mtime (0).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

TARGET = {"pid": 4100, "binary": "/usr/sbin/nginx", "method": "uprobes", "workers": [4101, 4102]}

EXCHANGES: list[dict[str, Any]] = [
    {
        "id": 1,
        "start": 1700000000.25,
        "end": 1700000000.2625,
        "pid": 4101,
        "client": "127.0.0.1:40001",
        "server": "127.0.0.1:8080",
        "tls": False,
        "conn_id": "4101:11:1000001",
        "conn_seq": 0,
        "method": "GET",
        "target": "/api/items?page=1",
        "version": "HTTP/1.1",
        "host": "shop.example.test",
        "status": 200,
        "reason": "OK",
        "request_bytes": 97,
        "response_bytes": 180,
        "request_headers": [
            ["Host", "shop.example.test"],
            ["Accept", "application/json"],
            ["X-Name", "Zoë 東京 ✓"],
        ],
        "response_headers": [
            ["Server", "nginx/1.22.1"],
            ["Content-Type", "application/json"],
            ["Content-Length", "26"],
        ],
        "request_body": "",
        "response_body": "eyJpdGVtcyI6WzEsMiwzXSwicGFnZSI6MX0=",
        "request_body_size": 0,
        "response_body_size": 26,
        "sendfile_bytes": 0,
        "truncated": False,
        "error": None,
        "upstream": [
            {
                "addr": "127.0.0.1:8081",
                "status": 502,
                "connect_ms": 0.2,
                "header_ms": 1.5,
                "duration_ms": 1.6,
                "request_bytes": 80,
                "response_bytes": 0,
                "reused": False,
                "start": 1700000000.2504,
                "request_head": "GET /api/items?page=1 HTTP/1.0\r\n\r\n",
                "response_head": None,
            },
            {
                "addr": "127.0.0.1:8082",
                "status": 200,
                "connect_ms": 0.0,
                "header_ms": 9.5,
                "duration_ms": 10.0,
                "request_bytes": 80,
                "response_bytes": 150,
                "reused": True,
                "start": 1700000000.2521,
                "request_head": "GET /api/items?page=1 HTTP/1.0\r\n\r\n",
                "response_head": "HTTP/1.1 200 OK\r\n\r\n",
            },
        ],
        "duration_ms": 12.5,
    },
    {
        "id": 2,
        "start": 1700000000.125,
        "end": 1700000000.5,
        "pid": 4102,
        "client": "[::1]:50000",
        "server": "[::1]:8443",
        "tls": True,
        "conn_id": "4102:12:1000002",
        "conn_seq": 3,
        "method": "POST",
        "target": "/upload",
        "version": "HTTP/1.1",
        "host": "shop.example.test",
        "status": 413,
        "reason": "Request Entity Too Large",
        "request_bytes": 70000,
        "response_bytes": 300,
        "request_headers": [
            ["Host", "shop.example.test"],
            ["Content-Type", "application/octet-stream"],
        ],
        "response_headers": [["Connection", "close"]],
        "request_body": "AAH/gA0KwwA=",
        "response_body": "",
        "request_body_size": 69900,
        "response_body_size": 180,
        "sendfile_bytes": 0,
        "truncated": True,
        "error": None,
        "upstream": [],
        "duration_ms": 375.0,
    },
    {
        "id": 3,
        "start": 1700000001.0,
        "end": 1700000001.0,
        "pid": 4101,
        "client": "127.0.0.1:40003",
        "server": "127.0.0.1:8080",
        "tls": False,
        "conn_id": "4101:13:1000003",
        "conn_seq": 0,
        "method": "",
        "target": "",
        "version": "",
        "host": "",
        "status": None,
        "reason": "",
        "request_bytes": 5,
        "response_bytes": 0,
        "request_headers": [],
        "response_headers": [],
        "request_body": "",
        "response_body": "",
        "request_body_size": 0,
        "response_body_size": 0,
        "sendfile_bytes": 0,
        "truncated": False,
        "error": "malformed request line",
        "upstream": [],
        "duration_ms": 0.0,
    },
]

EVENT = {"ts": 1700000000.0, "kind": "attach", "pid": 4100, "detail": "uprobes on 2 workers"}
STATS = {
    "ts": 1700000001.5,
    "events": 42,
    "lost": 0,
    "truncated": 1,
    "workers": [4101, 4102],
    "method": "uprobes",
    "requests": 3,
}


def v1_records() -> list[dict[str, Any]]:
    return [
        {
            "t": "header",
            "format": "ngxscope-session",
            "version": 1,
            "created": 1700000000.0,
            "tool": "ngxscope 0.1.0",
            "target": TARGET,
        },
        {"t": "event", **EVENT},
        *({"t": "exchange", **ex} for ex in EXCHANGES),
        {"t": "stats", **STATS},
        {"t": "end", "exchanges": 3, "ts": 1700000002.0},
    ]


def v0_records() -> list[dict[str, Any]]:
    """Version 0 stored headers as objects under req_headers / resp_headers."""
    out = []
    for rec in v1_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec.update(version=0, tool="ngxscope 0.0.1")
        elif rec["t"] == "exchange":
            rec["req_headers"] = dict(rec.pop("request_headers"))
            rec["resp_headers"] = dict(rec.pop("response_headers"))
        out.append(rec)
    return out


def write(name: str, records: list[dict[str, Any]]) -> None:
    with (
        open(HERE / name, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        for rec in records:
            gz.write(json.dumps(rec, ensure_ascii=True, separators=(",", ":")).encode() + b"\n")


def v2_records() -> list[dict[str, Any]]:
    """Version 2 added nginx_ms to exchanges (nginx's clock: 12.0 ms for a 12.5 ms one)."""
    out = []
    for rec in v1_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec["version"] = 2
        elif rec["t"] == "exchange":
            rec["nginx_ms"] = {1: 12.0, 2: 375.0}.get(rec["id"])
        out.append(rec)
    return out


def v3_records() -> list[dict[str, Any]]:
    """Version 3 added server_block to exchanges and group to upstream attempts."""
    out = []
    for rec in v2_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec["version"] = 3
        elif rec["t"] == "exchange":
            rec["server_block"] = {1: "shop.example.test"}.get(rec["id"])
            rec["upstream"] = [{**a, "group": "app"} for a in rec.get("upstream", [])]
        out.append(rec)
    return out


def v4_records() -> list[dict[str, Any]]:
    """Version 4 added summary_only to exchanges (counted from the kernel summary; the
    version 3 error note that said so is gone)."""
    out = []
    for rec in v3_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec["version"] = 4
        elif rec["t"] == "exchange":
            rec["summary_only"] = False
        out.append(rec)
    return out


V5_WIRE: dict[str, Any] = {
    "conn_start": None,
    "tcp_connect_ms": None,
    "tls_handshake_ms": None,
    "tls_version": None,
    "tls_cipher": None,
    "sni": None,
    "alpn": None,
    "tls_resumed": None,
    "retransmits": None,
    "reset_by": None,
    "conn_outcome": None,
}
V5_TLS: dict[str, Any] = {
    "conn_start": 1700000000.4975,
    "tcp_connect_ms": 0.052,
    "tls_handshake_ms": 1.875,
    "tls_version": "TLSv1.3",
    "tls_cipher": "TLS_AES_256_GCM_SHA384",
    "sni": "shop.example.test",
    "alpn": "http/1.1",
    "tls_resumed": True,
    "retransmits": 1,
    "reset_by": "client",
    "conn_outcome": None,
}


def v5_records() -> list[dict[str, Any]]:
    """Version 5 added the user's mark and note (one marked and noted here), location (the
    location block that served it), answer (why nginx answered itself) and proxy_client (the
    client a PROXY protocol header named; null without one) and the wire fields of the socket
    filter (a TLS exchange has them all) to exchanges."""
    out = []
    for rec in v4_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec["version"] = 5
        elif rec["t"] == "exchange":
            # keys in the writer's order: the model's fields, then duration_ms
            keys = list(rec)
            rec["location"] = {1: "/api/", 2: "= /upload"}.get(rec["id"])
            rec["answer"] = {1: "cache-miss"}.get(rec["id"])
            rec["proxy_client"] = {2: "203.0.113.7:51000"}.get(rec["id"])
            rec["mark"] = {1: "red"}.get(rec["id"], "")
            rec["note"] = {1: "retried: 8081 refused (ticket #42) ✓"}.get(rec["id"], "")
            at = keys.index("server_block") + 1
            keys[at:at] = ["location", "answer"]
            at = keys.index("duration_ms")
            keys[at:at] = ["mark", "note"]
            keys.append("proxy_client")
            rec = {k: rec[k] for k in keys}
            rec.update(V5_TLS if rec["tls"] else V5_WIRE)
        out.append(rec)
    return out


V6_FRAMES = [
    # a SYN and nginx's SYN-ACK on loopback (Ethernet + IPv4 + TCP, as the filter cut them)
    {"ts": 1700000000.4975, "frame": "AAAAAAAAAAAAAAAACABFAAA8AABAAEAGPLp/AAABfwAAAZ2UIPsAAAPoAAAAAKAC//9xYAAAAgQ/2AQCCAoAAAAAAAAAAAEDAwc="},
    {"ts": 1700000000.49752, "frame": "AAAAAAAAAAAAAAAACABFAAA8AABAAEAGPLp/AAABfwAAASD7nZQAABOIAAAD6aAS//9VYAAAAgQ/2AQCCAoAAAAAAAAAAAEDAwc="},
]


def v6_records() -> list[dict[str, Any]]:
    """Version 6 added to exchanges: location_via (how the location was known: "nginx" read
    from its memory, "config" matched on its configuration); kept_by (why a row while the
    capture sampled); wire_packets (the connection's packets as the socket filter passed
    them, on the TLS exchange here, [] on the others); remote (the client nginx's realip
    module logged): exchange 2's, from X-Real-IP; nginx_end (nginx's $msec) for exchanges 1
    and 2; subrequest_upstream (the attempts of the request's subrequests, apart from its
    own): exchange 1 has one (an auth_request subrequest), the others none."""
    out = []
    for rec in v5_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec["version"] = 6
        elif rec["t"] == "exchange":
            keys = list(rec)
            rec["location_via"] = {1: "nginx", 2: "config"}.get(rec["id"])
            at = keys.index("answer") + 1
            keys[at:at] = ["location_via"]
            rec["kept_by"] = {1: "sample", 2: "error,slow"}.get(rec["id"])
            rec["wire_packets"] = V6_FRAMES if rec["tls"] else []
            rec["remote"] = {2: "198.51.100.4"}.get(rec["id"])
            rec["nginx_end"] = {1: 1700000000.262, 2: 1700000000.5}.get(rec["id"])
            rec["subrequest_upstream"] = [{
                "addr": "127.0.0.1:9000",
                "status": 200,
                "connect_ms": 0.1,
                "header_ms": 0.9,
                "duration_ms": 1.0,
                "request_bytes": 60,
                "response_bytes": 90,
                "reused": False,
                "start": 1700000000.2502,
                "request_head": "GET /auth HTTP/1.0\r\nHost: auth\r\n",
                "response_head": "HTTP/1.1 200 OK\r\nContent-Length: 0",
                "group": "auth",
            }] if rec["id"] == 1 else []
            at = keys.index("conn_outcome") + 1
            keys[at:at] = ["kept_by", "wire_packets", "remote", "nginx_end", "subrequest_upstream"]
            rec = {k: rec[k] for k in keys}
        out.append(rec)
    return out


def v7_records() -> list[dict[str, Any]]:
    """Version 7 added upstream_via to exchanges (how the attempts were known: "nginx" read
    from its memory, "wire" rebuilt from the bytes; null without attempts) and redirected to
    attempts (another group after an internal redirect): exchange 1's attempts are nginx's,
    its second in another group."""
    out = []
    for rec in v6_records():
        rec = dict(rec)
        if rec["t"] == "header":
            rec["version"] = 7
        elif rec["t"] == "exchange":
            rec["upstream"] = [{**a, "redirected": rec["id"] == 1 and i == 1} for i, a in enumerate(rec["upstream"])]
            rec["subrequest_upstream"] = [{**a, "redirected": False} for a in rec["subrequest_upstream"]]
            rec["upstream_via"] = "nginx" if rec["id"] == 1 else ("wire" if rec["upstream"] else None)
        out.append(rec)
    return out


if __name__ == "__main__":
    for version, records in enumerate([v0_records(), v1_records(), v2_records(), v3_records(),
                                       v4_records(), v5_records(), v6_records(), v7_records()]):
        if not (HERE / f"session-v{version}.ngxs").exists():
            write(f"session-v{version}.ngxs", records)
