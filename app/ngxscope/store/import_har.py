"""Reading a HAR file (a browser's, HTTP Toolkit's, or ngxscope's own) as a read-only session.

Each entry becomes an `Exchange`. What a HAR does not know stays empty (worker pid 0,
client ""), unless the entry carries ngxscope's own custom fields (`_pid`, `_client`,
`_upstream`...), which make an exported session come back whole. HTTP/2 pseudo-headers
(`:authority`...) are dropped (their content is in the URL). HAR content is decoded;
bodies are put back in wire form where the headers ask for it (re-chunked as one chunk,
re-compressed for gzip/deflate) so the exchange keeps the model's meaning ("bytes as they
crossed the wire"). Anything malformed raises `SessionError` with one line naming the
file and the entry.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import zlib
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from ngxscope.model import MARKS, Exchange, ModelError, UpstreamAttempt
from ngxscope.store.export_har import b64decode_text, header
from ngxscope.store.session import Session, SessionError

__all__ = ["import_har", "parse_har"]

MAX_HAR_BYTES = 2 * 1024 * 1024 * 1024


class _Bad(ValueError):
    pass


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if not isinstance(obj, dict):
        raise _Bad(f"{where} is not an object")
    if key not in obj or obj[key] is None:
        if default is ...:
            raise _Bad(f"{where}.{key} is missing")
        return default
    value = obj[key]
    if isinstance(value, bool) and kind is not bool and bool not in (
        kind if isinstance(kind, tuple) else (kind,)
    ):
        raise _Bad(f"{where}.{key} has the wrong type (bool)")
    if not isinstance(value, kind):
        raise _Bad(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _headers(obj: dict[str, Any], where: str) -> list[tuple[str, str]]:
    out = []
    for i, h in enumerate(_get(obj, "headers", list, where, [])):
        name = str(_get(h, "name", str, f"{where}.headers[{i}]"))
        value = _get(h, "value", (str, int, float), f"{where}.headers[{i}]", "")
        if not name.startswith(":"):
            out.append((name, str(value)))
    return out


def _parse_time(text: str, where: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _Bad(f"{where}.startedDateTime is not an ISO 8601 time ({text[:40]!r})") from None


def _text_bytes(obj: dict[str, Any], where: str) -> bytes:
    text = _get(obj, "text", str, where, "")
    if str(obj.get("encoding") or "").lower() == "base64":
        try:
            return b64decode_text(text)
        except ValueError as exc:
            raise _Bad(f"{where}.text: {exc}") from None
    return text.encode("utf-8", "surrogatepass")


def _wire(headers: list[tuple[str, str]], body: bytes) -> bytes:
    """Put a decoded HAR body back in wire form (compression, chunked framing)."""
    encoding = (header(headers, "Content-Encoding") or "").strip().lower()
    if body and encoding in ("gzip", "x-gzip"):
        body = gzip.compress(body, mtime=0)
    elif body and encoding == "deflate":
        body = zlib.compress(body)
    if "chunked" in (header(headers, "Transfer-Encoding") or "").lower():
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return body


def _version(text: str) -> str:
    low = text.strip().lower()
    if low in ("h2", "http/2", "http/2.0"):
        return "HTTP/2.0"
    if low in ("h3", "http/3", "http/3.0"):
        return "HTTP/3.0"
    return text.strip().upper() or "HTTP/1.1"


def _head_len(first: str, headers: list[tuple[str, str]]) -> int:
    return len((first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode())


def _entry(e: Any, i: int) -> Exchange:
    where = f"entry {i}"
    if not isinstance(e, dict):
        raise _Bad(f"{where} is not an object")
    req = _get(e, "request", dict, where)
    resp = _get(e, "response", dict, where, {})
    start = _parse_time(_get(e, "startedDateTime", str, where), where)
    total_ms = float(_get(e, "time", (int, float), where, 0.0))
    method = _get(req, "method", str, f"{where}.request")
    url = _get(req, "url", str, f"{where}.request")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _Bad(f"{where}.request.url is not a URL ({url[:60]!r})") from None
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not parts.scheme:
        target = url
    req_headers = _headers(req, f"{where}.request")
    host = header(req_headers, "Host") or parts.netloc
    port = port or (443 if tls else 80)
    ip = str(e.get("serverIPAddress") or parts.hostname or "")
    ip = ip[1:-1] if ip.startswith("[") else ip
    server = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    if isinstance(e.get("_server"), str):
        server = e["_server"]
    version = _version(_get(req, "httpVersion", str, f"{where}.request", ""))
    post = _get(req, "postData", dict, f"{where}.request", None)
    req_body = _wire(req_headers, _text_bytes(post, f"{where}.request.postData")) if post else b""
    req_body_size = int(_get(req, "bodySize", (int, float), f"{where}.request", -1))
    if req_body_size < 0 or (req_body and req_body_size != len(req_body)):
        req_body_size = len(req_body)

    status_code = int(_get(resp, "status", (int, float), f"{where}.response", 0))
    status = status_code if status_code > 0 else None
    reason = _get(resp, "statusText", str, f"{where}.response", "")
    resp_headers = _headers(resp, f"{where}.response")
    content = _get(resp, "content", dict, f"{where}.response", {})
    resp_body = _wire(resp_headers, _text_bytes(content, f"{where}.response.content"))
    body_size = int(_get(resp, "bodySize", (int, float), f"{where}.response", -1))
    truncated = bool(e.get("_truncated", False))
    if body_size < 0:
        body_size = len(resp_body)
    elif not resp_body and body_size > 0:
        truncated = True  # the HAR holds no content for a body that was sent
    elif resp_body:
        body_size = len(resp_body)
    req_head = _head_len(f"{method} {target} {version}", req_headers)
    resp_head = _head_len(f"HTTP/1.1 {status_code} {reason}", resp_headers) if status else 0
    upstream = []
    for j, a in enumerate(e.get("_upstream") or []):
        try:
            upstream.append(UpstreamAttempt.from_dict(a))
        except (ModelError, TypeError) as exc:
            raise _Bad(f"{where}._upstream[{j}]: {exc}") from None
    subrequest = []
    for j, a in enumerate(e.get("_subrequestUpstream") or []):
        try:
            subrequest.append(UpstreamAttempt.from_dict(a))
        except (ModelError, TypeError) as exc:
            raise _Bad(f"{where}._subrequestUpstream[{j}]: {exc}") from None
    pid = e.get("_pid", 0)
    nginx_ms = e.get("_nginxMs")
    nginx_end = e.get("_nginxEnd")
    return Exchange(
        id=int(e["_id"]) if isinstance(e.get("_id"), int) else i + 1,
        start=start,
        end=start + max(0.0, total_ms) / 1000.0,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
        client=str(e.get("_client") or ""),
        server=server,
        tls=bool(e.get("_tls", tls)),
        conn_id=str(e.get("connection") or ""),
        conn_seq=int(e["_connSeq"]) if isinstance(e.get("_connSeq"), int) else 0,
        method=method,
        target=target,
        version=version,
        host=host,
        status=status,
        reason=reason,
        request_bytes=req_head + req_body_size,
        response_bytes=resp_head + body_size if status else 0,
        request_headers=req_headers,
        response_headers=resp_headers,
        request_body=req_body,
        response_body=resp_body,
        request_body_size=req_body_size,
        response_body_size=body_size if status else 0,
        sendfile_bytes=int(e.get("_sendfileBytes") or 0),
        truncated=truncated,
        error=str(e["_error"]) if e.get("_error") else None,
        upstream=upstream,
        nginx_ms=float(nginx_ms) if isinstance(nginx_ms, int | float) else None,
        nginx_end=float(nginx_end) if isinstance(nginx_end, int | float) and not isinstance(nginx_end, bool) else None,
        remote=str(e["_remote"]) if e.get("_remote") else None,
        subrequest_upstream=subrequest,
        server_block=str(e["_serverBlock"]) if e.get("_serverBlock") else None,
        summary_only=e.get("_summaryOnly") is True,
        mark=str(e["_mark"]) if e.get("_mark") in MARKS else "",
        note=e["comment"] if isinstance(e.get("comment"), str) else "",
    )


def parse_har(data: Any, name: str = "HAR") -> Session:
    """A `Session` from a decoded HAR document (see `import_har`)."""
    log = data.get("log") if isinstance(data, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        raise SessionError(f"{name} is not a HAR file (no log.entries)")
    creator_raw = log.get("creator")
    creator: dict[str, Any] = creator_raw if isinstance(creator_raw, dict) else {}
    header = {
        "t": "header",
        "format": "har",
        "version": str(log.get("version", "")),
        "tool": f"{creator.get('name', '?')} {creator.get('version', '')}".strip(),
        "target": {"har": name},
    }
    session = Session(header=header, complete=True)
    for i, e in enumerate(log["entries"]):
        try:
            session.exchanges.append(_entry(e, i))
        except (_Bad, TypeError, ValueError, OverflowError) as exc:
            raise SessionError(f"{name}: {exc}") from None
    return session


def import_har(path: str | os.PathLike[str]) -> Session:
    """Read a HAR file into a read-only `Session` of exchanges (file order kept).

    Raises `SessionError` with one line for a missing, unreadable or malformed file.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise SessionError(f"cannot open HAR file {path}: it is a directory")
        if st.st_size > MAX_HAR_BYTES:
            raise SessionError(f"{path} is too large for a HAR file ({st.st_size} bytes)")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SessionError(f"cannot open HAR file {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise SessionError(f"{path} is empty, not a HAR file")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SessionError(f"{path} is not a HAR file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise SessionError(
            f"{path} is not a valid HAR file: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise SessionError(f"{path} is not a valid HAR file (nested too deeply)") from None
    return parse_har(data, path)
