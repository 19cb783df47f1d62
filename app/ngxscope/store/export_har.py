"""HAR 1.2 export (http://www.softwareishard.com/blog/har-12-spec/), streamed entry by entry.

Each exchange is one entry, as a browser's developer tools would show it:

- `startedDateTime`: ISO 8601 UTC with milliseconds, when nginx read the first request byte.
- `timings`: `blocked` and `dns` are -1 (nginx does not see them); `connect` and `ssl` are the
  connection's TCP and TLS handshakes as the socket filter saw them (`connect` includes `ssl`,
  as HAR says) on the first request of a connection, -1 on the others and when not seen;
  `send` is 0 (the request is read by the time it is parsed); `wait` is
  the time until the response head was ready (from the start of the last upstream attempt
  plus its header time when proxied, else the whole duration); `receive` the rest. `time`,
  the sum of the non-negative timings but `ssl` (inside `connect`), is the exchange's
  duration plus the connection setup on a connection's first request.
- `content`: the response body de-chunked and decompressed (gzip, deflate) like DevTools
  shows it, `compression` the bytes saved; binary content is base64 with
  `encoding: "base64"` (the same for `postData`, an extension browsers accept).
  Sizes of bodies that were not captured whole (payload cap, sendfile) stay true.
- `serverIPAddress`, `connection` (the capture's connection id), and custom fields:
  `_id`, `_pid`, `_worker`, `_client`, `_server`, `_tls`, `_upstream` (attempts as dicts),
  `_truncated`, `_error`, `_sendfileBytes`, `_nginxMs`, `_connSeq`, `_serverBlock`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import parse_qsl

from ngxscope import __version__
from ngxscope.model import Exchange
from ngxscope.store.httpbody import dechunk, inflate

__all__ = ["MAX_DECODED", "dechunk", "decode_body", "har_entry", "iso_time", "write_har"]

MAX_DECODED = 64 * 1024 * 1024
"""Decompressed bodies are cut at this size (a zip bomb stays harmless)."""

Headers = list[tuple[str, str]]


def header(headers: Headers, name: str) -> str | None:
    """The last value of header `name` (case-insensitive), or None."""
    low = name.lower()
    found = None
    for k, v in headers:
        if k.lower() == low:
            found = v
    return found


def iso_time(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds ("2023-11-14T22:13:20.010Z")."""
    if not math.isfinite(ts):
        ts = 0.0
    try:
        dt = datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError, ValueError):
        dt = datetime.fromtimestamp(0, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def decode_body(
    headers: Headers, wire: bytes
) -> tuple[bytes, bool, int]:
    """Body bytes as an application sees them: (decoded, decompressed?, entity length).

    De-chunks `Transfer-Encoding: chunked` and decompresses gzip/deflate
    `Content-Encoding`; the entity length is that of the de-chunked (still compressed) body.
    """
    body = wire
    if "chunked" in (header(headers, "Transfer-Encoding") or "").lower():
        body, _ = dechunk(wire)
    entity = len(body)
    encoding = header(headers, "Content-Encoding")
    if encoding and body:
        plain = inflate(body, encoding, MAX_DECODED)[0]
        if plain is not None:
            return plain, True, entity
    return body, False, entity


def _text(data: bytes) -> dict[str, Any]:
    """{"text": ...} for UTF-8 text, {"text": base64, "encoding": "base64"} otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"text": base64.b64encode(data).decode("ascii"), "encoding": "base64"}
    if any(c in text for c in "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f\x7f"):
        return {"text": base64.b64encode(data).decode("ascii"), "encoding": "base64"}
    return {"text": text}


def _url(ex: Exchange) -> str:
    if ex.target.startswith(("http://", "https://")):
        return ex.target
    scheme = "https" if ex.tls else "http"
    host = ex.host or ex.server or "localhost"
    target = ex.target if ex.target.startswith("/") else "/" + ex.target
    return f"{scheme}://{host}{target}"


def _ip(addr: str) -> str:
    if addr.startswith("["):
        return addr[1:].split("]", 1)[0]
    return addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr


def _query(target: str) -> list[dict[str, str]]:
    if "?" not in target:
        return []
    query = target.split("?", 1)[1].split("#", 1)[0]
    return [{"name": k, "value": v} for k, v in parse_qsl(query, keep_blank_values=True)]


def _pairs(headers: Headers) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in headers]


def _request_cookies(headers: Headers) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k, v in headers:
        if k.lower() == "cookie":
            for part in v.split(";"):
                name, eq, value = part.strip().partition("=")
                if name or eq:
                    out.append({"name": name.strip(), "value": value.strip()})
    return out


def _response_cookies(headers: Headers) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k, v in headers:
        if k.lower() != "set-cookie":
            continue
        first, *attrs = v.split(";")
        name, _, value = first.strip().partition("=")
        cookie: dict[str, Any] = {"name": name.strip(), "value": value.strip()}
        for attr in attrs:
            key, _, val = attr.strip().partition("=")
            low = key.lower()
            if low in ("path", "domain", "expires"):
                cookie[low] = val
            elif low == "httponly":
                cookie["httpOnly"] = True
            elif low == "secure":
                cookie["secure"] = True
        out.append(cookie)
    return out


def _post_data(ex: Exchange) -> dict[str, Any] | None:
    if not ex.method or (not ex.request_body and ex.request_body_size <= 0):
        return None
    mime = header(ex.request_headers, "Content-Type") or "application/octet-stream"
    body, _, _ = decode_body(ex.request_headers, ex.request_body)
    post: dict[str, Any] = {"mimeType": mime}
    params: list[dict[str, str]] = []
    if "x-www-form-urlencoded" in mime.lower():
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            pairs = []
        params = [{"name": k, "value": v} for k, v in pairs]
    post["params"] = params
    post.update(_text(body))
    return post


def _timings(ex: Exchange) -> dict[str, float]:
    duration = ex.duration_ms
    wait = duration
    last = ex.upstream[-1] if ex.upstream else None
    if last is not None and last.start is not None and last.header_ms is not None:
        wait = (last.start - ex.start) * 1000.0 + last.header_ms
    wait = round(min(max(wait, 0.0), duration), 3)
    connect: float = -1
    ssl: float = -1
    if ex.conn_seq == 0 and ex.tcp_connect_ms is not None:
        ssl = round(ex.tls_handshake_ms, 3) if ex.tls_handshake_ms is not None else -1
        connect = round(ex.tcp_connect_ms + max(ssl, 0.0), 3)
    return {
        "blocked": -1,
        "dns": -1,
        "connect": connect,
        "send": 0,
        "wait": wait,
        "receive": round(max(0.0, duration - wait), 3),
        "ssl": ssl,
    }


def _content(ex: Exchange) -> dict[str, Any]:
    mime = header(ex.response_headers, "Content-Type") or "x-unknown"
    decoded, compressed, entity = decode_body(ex.response_headers, ex.response_body)
    whole = not ex.truncated and ex.sendfile_bytes == 0
    chunked = "chunked" in (header(ex.response_headers, "Transfer-Encoding") or "").lower()
    if whole or compressed or chunked:
        size = len(decoded)
    else:  # identity body not captured whole: its size is still known
        size = max(ex.response_body_size, len(decoded))
    content: dict[str, Any] = {"size": size, "mimeType": mime}
    if compressed:
        content["compression"] = len(decoded) - entity
    if decoded:
        content.update(_text(decoded))
    return content


def har_entry(ex: Exchange) -> dict[str, Any]:
    """One HAR 1.2 entry for an exchange."""
    has_response = ex.status is not None
    req_head = ex.request_bytes - ex.request_body_size if ex.method else -1
    request: dict[str, Any] = {
        "method": ex.method,
        "url": _url(ex),
        "httpVersion": ex.version,
        "cookies": _request_cookies(ex.request_headers),
        "headers": _pairs(ex.request_headers),
        "queryString": _query(ex.target),
        "headersSize": req_head if req_head >= 0 else -1,
        "bodySize": ex.request_body_size if ex.method else -1,
    }
    post = _post_data(ex)
    if post is not None:
        request["postData"] = post
    resp_head = ex.response_bytes - ex.response_body_size
    response: dict[str, Any] = {
        "status": ex.status if has_response else 0,
        "statusText": ex.reason,
        "httpVersion": "HTTP/1.1" if has_response else "",
        "cookies": _response_cookies(ex.response_headers),
        "headers": _pairs(ex.response_headers),
        "content": _content(ex),
        "redirectURL": header(ex.response_headers, "Location") or "",
        "headersSize": resp_head if has_response and resp_head >= 0 else -1,
        "bodySize": ex.response_body_size if has_response else -1,
    }
    timings = _timings(ex)
    entry: dict[str, Any] = {
        "startedDateTime": iso_time(ex.start),
        "time": round(sum(v for k, v in timings.items() if v >= 0 and k != "ssl"), 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": timings,
        "serverIPAddress": _ip(ex.server),
        "connection": ex.conn_id,
        "_id": ex.id,
        "_pid": ex.pid,
        "_worker": ex.pid,
        "_client": ex.client,
        "_server": ex.server,
        "_tls": ex.tls,
        "_upstream": [a.to_dict() for a in ex.upstream],
        "_truncated": ex.truncated,
        "_error": ex.error,
        "_sendfileBytes": ex.sendfile_bytes,
        "_nginxMs": ex.nginx_ms,
        "_nginxEnd": ex.nginx_end,
        "_remote": ex.remote,
        "_subrequestUpstream": [a.to_dict() for a in ex.subrequest_upstream],
        "_connSeq": ex.conn_seq,
        "_serverBlock": ex.server_block,
        "_summaryOnly": ex.summary_only,
        "_mark": ex.mark,
    }
    if ex.note:
        entry["comment"] = ex.note  # HAR 1.2's own place for a user's remark on an entry
    return entry


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def write_har(exchanges: Iterable[Exchange], out: IO[bytes], comment: str = "") -> int:
    """Write a HAR 1.2 document with one entry per HTTP exchange (in the order given); TCP
    proxy sessions (`Exchange.is_tcp`) and connections that never became a request
    (`Exchange.conn_outcome`) are skipped: HAR holds HTTP only. Returns the number of entries
    written."""
    creator = {"name": "ngxscope", "version": __version__}
    head = '{"log":{"version":"1.2","creator":' + _dumps(creator)
    if comment:
        head += ',"comment":' + _dumps(comment)
    out.write((head + ',"pages":[],"entries":[').encode())
    n = 0
    for ex in exchanges:
        if ex.is_tcp or ex.conn_outcome is not None:
            continue
        line = _dumps(har_entry(ex))
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a header: escape it
            data = json.dumps(har_entry(ex), ensure_ascii=True, separators=(",", ":")).encode()
        out.write((b",\n" if n else b"\n") + data)
        n += 1
    out.write(b"\n]}}\n")
    return n


def b64decode_text(text: str) -> bytes:
    """Strict base64 (used by the HAR importer)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ValueError(f"bad base64 text ({exc})") from None
