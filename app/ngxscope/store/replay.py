"""Replay a captured request to nginx itself or to one upstream peer, and diff the answers.

`send(spec, to=...)` writes the request (`copyas.RequestSpec`: as nginx received it, or as
nginx sent it to a peer) on a fresh connection, HTTP/1.x framing, TLS when the original used
it (certificate not verified: nginx's certificate names its hosts, not the address typed),
and reads one response by its framing. `diff(ex, result)` compares it with the recorded
response: status, headers (volatile ones such as Date listed apart) and the decoded body.

Tag: every replay carries the request header `X-Ngxscope-Replay: <capture id>` (`TAG`), so
the capture, which sees the replay go through nginx, can tell it apart:
`is_replay(ex)`; the window keeps replays out of its statistics. The tag adds exactly
`tag_bytes(id)` bytes to the request (`tag=False` sends the request unchanged).

Safety (`check_target`): the default destination is the address that received the original
(nginx's listener, or the peer); it must be a loopback address unless the user typed it.
Methods that are not idempotent (`needs_confirmation`) must be confirmed by the caller.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field

from ngxscope.decode.http1 import HeadError, parse_head
from ngxscope.model import Exchange
from ngxscope.store.bodysearch import decoded_body
from ngxscope.store.copyas import RequestSpec, to_raw
from ngxscope.store.httpbody import dechunk

__all__ = [
    "IDEMPOTENT",
    "TAG",
    "VOLATILE",
    "ReplayDiff",
    "ReplayError",
    "ReplayResult",
    "check_target",
    "diff",
    "is_replay",
    "needs_confirmation",
    "send",
    "tag_bytes",
]

TAG = "X-Ngxscope-Replay"
"""The request header every replay carries (value: the original's capture id)."""

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 idempotent methods: replayed without asking."""

VOLATILE = frozenset({"date", "expires", "last-modified", "age", "set-cookie", "etag",
                      "x-request-id", "content-length", "transfer-encoding", "connection",
                      "keep-alive"})
"""Headers expected to differ between two answers (shown apart in the diff)."""

MAX_BODY = 16 * 1024 * 1024


class ReplayError(Exception):
    """The replay could not be sent or its answer read; the message is one clear line."""


@dataclass(slots=True)
class ReplayResult:
    """The answer to one replay."""

    to: str
    """Where it was sent ("ip:port")."""
    status: int | None = None
    """Status code of the answer; None when none came."""
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Response headers in wire order."""
    body: bytes = b""
    """Response body as received (chunked framing kept, like a captured one)."""
    duration_ms: float = 0.0
    """From connect to the last byte of the answer."""
    request_bytes: int = 0
    """Bytes of the request sent (tag included)."""
    error: str | None = None
    """Why there is no (complete) answer."""


@dataclass(slots=True)
class ReplayDiff:
    """How a replay's answer differs from the recorded one."""

    status: tuple[int | None, int | None]
    """(recorded, replayed)."""
    added: list[tuple[str, str]] = field(default_factory=list)
    """Headers only in the replay (name, value)."""
    removed: list[tuple[str, str]] = field(default_factory=list)
    """Headers only in the recording."""
    changed: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, recorded value, replayed value)."""
    volatile: list[str] = field(default_factory=list)
    """Names of volatile headers that changed (Date…), not counted as differences."""
    body_equal: bool = True
    body_diff: list[str] = field(default_factory=list)
    """Unified diff lines of the decoded bodies (text), or a one-line summary (binary)."""

    @property
    def same(self) -> bool:
        return (self.status[0] == self.status[1] and not self.added and not self.removed
                and not self.changed and self.body_equal)


def is_replay(ex: Exchange) -> bool:
    """The exchange is a replay (it carries the `TAG` header; the replayer sends it last, which
    the statistics rely on to skip replays at no cost: store/aggregate.py)."""
    low = TAG.lower()
    return any(k.lower() == low for k, _v in ex.request_headers)


def tag_bytes(ex_id: int) -> int:
    """Bytes the tag header adds to a request."""
    return len(f"{TAG}: {ex_id}\r\n")


def needs_confirmation(method: str) -> bool:
    return method.upper() not in IDEMPOTENT


def _split(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ReplayError(f"bad address {addr!r} (host:port, [v6]:port)")
    return host.strip("[]"), int(port)


def check_target(default: str, typed: str | None) -> str:
    """The address to send to: `typed` (the user wrote it: anywhere) or `default`, which
    must then be loopback."""
    if typed:
        _split(typed)
        return typed
    host, _port = _split(default)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ReplayError(f"the original went to {default}, not a loopback address: type it "
                          f"(--to {default}) to replay there")
    return default


def _tagged(spec: RequestSpec, tag: int | None) -> RequestSpec:
    if tag is None:
        return spec
    return dataclasses.replace(spec, headers=[*spec.headers, (TAG, str(tag))])


def _read_response(sock: socket.socket | ssl.SSLSocket, method: str, result: ReplayResult,
                   deadline: float) -> None:
    buf = bytearray()

    def fill() -> bool:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        data = sock.recv(65536)
        buf.extend(data)
        return bool(data)

    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            try:
                parts, headers = parse_head(bytes(buf[:end]))
            except HeadError as exc:
                raise ReplayError(f"bad response head: {exc}") from None
            del buf[: end + 4]
            status = int(parts[1]) if parts[1].isdigit() else None
            if status is not None and 100 <= status < 200 and status != 101:
                continue  # interim (100 Continue): the final answer follows
            break
        if not fill():
            raise ReplayError("connection closed before a response head")
    result.status = status
    result.reason = parts[2] if len(parts) > 2 else ""
    result.headers = headers
    low = {k.lower(): v for k, v in headers}
    if method == "HEAD" or status in (204, 304) or (status is not None and status < 200):
        return
    if "chunked" in low.get("transfer-encoding", "").lower():
        while not (buf.endswith(b"0\r\n\r\n") and _chunks_done(bytes(buf))):
            if len(buf) > MAX_BODY or not fill():
                result.error = "chunked body incomplete"
                break
    elif "content-length" in low:
        want = int(low["content-length"])
        while len(buf) < want and len(buf) <= MAX_BODY:
            if not fill():
                result.error = f"body incomplete: {len(buf)} of {want} bytes"
                break
        del buf[want:]
    else:
        while len(buf) <= MAX_BODY and fill():
            pass
    result.body = bytes(buf)


def _chunks_done(data: bytes) -> bool:
    return dechunk(data)[1]


def send(spec: RequestSpec, to: str, *, tag: int | None = None, timeout: float = 10.0,
         server_name: str | None = None) -> ReplayResult:
    """Send `spec` to `to` once and read the answer (raises ReplayError on failure)."""
    spec = _tagged(spec, tag)
    raw = to_raw(spec)  # HTTP/2 requests go as HTTP/1.1 (their headers and body unchanged)
    result = ReplayResult(to=to, request_bytes=len(raw))
    host, port = _split(to)
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ReplayError(f"cannot connect to {to}: {exc.strerror or exc}") from None
    try:
        if spec.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            name = server_name or spec.authority.rsplit(":", 1)[0].strip("[]") or None
            try:
                sock = ctx.wrap_socket(sock, server_hostname=name)
            except (OSError, ssl.SSLError) as exc:
                raise ReplayError(f"TLS handshake with {to} failed: {exc}") from None
        sock.sendall(raw)
        _read_response(sock, spec.method, result, deadline)
    except TimeoutError:
        raise ReplayError(f"no answer from {to} within {timeout:g} s") from None
    except OSError as exc:
        raise ReplayError(f"replay to {to} failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    result.duration_ms = (time.monotonic() - t0) * 1000.0
    return result


def _is_text(data: bytes) -> bool:
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(data[:65536]) - 4
    return b"\x00" not in data[:65536]


def diff(ex: Exchange, result: ReplayResult, context: int = 2, max_lines: int = 200) -> ReplayDiff:
    """Compare `result` with the response recorded in `ex`."""
    out = ReplayDiff(status=(ex.status, result.status))
    old = {k.lower(): (k, v) for k, v in ex.response_headers}
    new = {k.lower(): (k, v) for k, v in result.headers}
    for low, (k, v) in new.items():
        if low not in old:
            (out.volatile.append(k) if low in VOLATILE else out.added.append((k, v)))
        elif old[low][1] != v:
            (out.volatile.append(k) if low in VOLATILE else out.changed.append((k, old[low][1], v)))
    for low, (k, v) in old.items():
        if low not in new:
            (out.volatile.append(k) if low in VOLATILE else out.removed.append((k, v)))
    a = decoded_body(ex.response_body, ex.response_headers)
    b = decoded_body(result.body, result.headers)
    out.body_equal = a == b
    if out.body_equal:
        return out
    if ex.truncated:
        out.body_diff.append(f"(the recorded body was cut by the capture: {len(ex.response_body)}"
                             f" of {ex.response_body_size} bytes)")
    if _is_text(a) and _is_text(b):
        lines = difflib.unified_diff(
            a.decode("utf-8", "replace").splitlines(), b.decode("utf-8", "replace").splitlines(),
            "recorded", "replayed", n=context, lineterm="")
        out.body_diff += list(lines)[:max_lines]
    else:
        out.body_diff.append(f"binary bodies differ: {len(a):,} bytes recorded, {len(b):,} replayed")
    return out
