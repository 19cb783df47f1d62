"""Copy a request as a curl / HTTPie command, raw HTTP, or a Python `requests` script.

Two views of one request: `from_exchange(ex)` is the request as nginx received it from the
client; `from_attempt(ex, attempt)` is the request as nginx sent it to an upstream peer
(`UpstreamAttempt.request_head` plus the client's body). Both give a `RequestSpec`, which
`to_curl`, `to_httpie`, `to_raw` and `to_requests` render; `script(specs, fmt)` joins
several into one runnable script.

The curl command reproduces the request byte for byte where curl allows it: the headers
curl would add by itself (User-Agent, Accept, a form Content-Type, Expect) are removed
when the original lacked them, the target is sent as it was (`--path-as-is`,
`--request-target` for one a URL cannot carry), the protocol version is pinned, and
`--connect-to` sends it to the nginx address that received it while the URL keeps the
original Host (so the access-log line of the copy equals the original's: method, URI,
request_length, status). A chunked body is re-chunked by curl, so its framing (and
request_length) may differ.

Bodies: text goes inline; anything else (NUL, control bytes, not UTF-8) goes through
`base64 -d | curl --data-binary @-`. Values masked by redaction (`<redacted>`) are kept
masked: `RequestSpec.masked` names them and every output starts with a warning.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field

from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.httpbody import dechunk
from ngxscope.store.redact import MASK

__all__ = [
    "FORMATS",
    "RequestSpec",
    "from_attempt",
    "from_exchange",
    "masked_names",
    "raw_text",
    "render",
    "script",
    "shell_quote",
    "to_curl",
    "to_httpie",
    "to_raw",
    "to_requests",
]

FORMATS = {"curl": "curl", "httpie": "HTTPie", "raw": "raw HTTP", "requests": "Python requests"}
"""Output formats: key → menu label."""

_HOP_BY_CURL = ("user-agent", "accept")
"""Headers curl adds to every request unless told not to."""

_AUTHORITY = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
"""A Host value usable in a URL (else the URL names the connect address; Host stays a header)."""


@dataclass(slots=True)
class RequestSpec:
    """One request, ready to render (a neutral form of what nginx received or sent)."""

    method: str
    """Request method."""
    target: str
    """Request target as sent (origin form "/p?q", absolute form, or "*")."""
    version: str
    """"HTTP/1.0", "HTTP/1.1" or "HTTP/2.0"."""
    scheme: str
    """"http" or "https" (the connection used TLS)."""
    authority: str
    """Host[:port] for the URL (the Host header or :authority); "" when none was sent."""
    connect: str
    """The address the request went to ("ip:port"): nginx's listener, or the peer."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Headers in wire order, HTTP/2 pseudo-headers removed."""
    body: bytes = b""
    """The body as the payload (de-chunked when the request was chunked)."""
    chunked: bool = False
    """The request was sent with Transfer-Encoding: chunked."""
    notes: list[str] = field(default_factory=list)
    """What the copy cannot reproduce (truncated body, masked values...)."""
    masked: list[str] = field(default_factory=list)
    """Names of headers (and "target", "body") holding a value masked by redaction."""
    label: str = ""
    """A one-line description (capture id, method, target, status) for scripts."""

    @property
    def url(self) -> str:
        host = self.authority if _AUTHORITY.fullmatch(self.authority) else self.connect
        if self.target.startswith(("http://", "https://")):
            return self.target
        path = self.target if self.target.startswith("/") else "/"
        return f"{self.scheme}://{host}{path}"

    @property
    def direct_url(self) -> str:
        """The URL naming the connect address itself (for clients without --connect-to)."""
        path = self.target if self.target.startswith("/") else "/"
        return f"{self.scheme}://{self.connect}{path}"


# --- building a spec ---------------------------------------------------------------------


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    low = name.lower()
    for k, v in headers:
        if k.lower() == low:
            return v
    return None


def masked_names(spec: RequestSpec) -> list[str]:
    """Which parts of `spec` hold a value masked by redaction."""
    out = [k for k, v in spec.headers if MASK in v]
    if MASK in spec.target:
        out.append("target")
    if MASK.encode() in spec.body:
        out.append("body")
    return out


def _finish(spec: RequestSpec, wire_body: bytes, wire_size: int, truncated: bool) -> RequestSpec:
    te = (_get(spec.headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        spec.chunked = True
        spec.body, complete = dechunk(wire_body)
        if not complete:
            spec.notes.append("chunked body incomplete in the capture: the copy sends what was captured")
        spec.notes.append("chunked body: the client re-chunks it (framing may differ)")
    else:
        spec.body = wire_body
        if truncated or len(wire_body) < wire_size:
            spec.notes.append(f"body truncated in the capture: {len(wire_body)} of {wire_size} "
                              "bytes (Content-Length kept: the server will wait for the rest)")
    spec.masked = masked_names(spec)
    if spec.masked:
        spec.notes.insert(0, f"values masked when recorded ({', '.join(spec.masked)}): replace "
                          f"{MASK} before running (record with --no-redact to keep them)")
    return spec


def from_exchange(ex: Exchange) -> RequestSpec:
    """The request as nginx received it from the client."""
    h2 = ex.version.startswith("HTTP/2")
    pseudo = {k: v for k, v in ex.request_headers if k.startswith(":")}
    headers = [(k, v) for k, v in ex.request_headers if not k.startswith(":")]
    authority = pseudo.get(":authority") or _get(headers, "host") or ex.host
    spec = RequestSpec(
        method=ex.method or pseudo.get(":method", "GET"),
        target=ex.target or pseudo.get(":path", "/"),
        version=ex.version or "HTTP/1.1",
        scheme=pseudo.get(":scheme") or ("https" if ex.tls else "http"),
        authority=authority,
        connect=ex.server,
        headers=headers,
        label=f"#{ex.id} {ex.method} {ex.target} → {ex.status if ex.status is not None else '-'}",
    )
    if h2 and ":authority" in pseudo and _get(headers, "host") is None:
        spec.notes.append("HTTP/2 :authority sent as the URL's host")
    return _finish(spec, ex.request_body, ex.request_body_size, ex.truncated)


def from_attempt(ex: Exchange, attempt: UpstreamAttempt) -> RequestSpec:
    """The request as nginx sent it to `attempt`'s peer (its head, and the client's body)."""
    if not attempt.request_head:
        raise ValueError(f"no request head captured for the attempt to {attempt.addr}")
    text = attempt.request_head.replace("\r\n", "\n")
    lines = text.split("\n")
    parts = lines[0].split(" ")
    if len(parts) < 3:
        raise ValueError(f"bad request line in the head sent to {attempt.addr}: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    spec = RequestSpec(
        method=parts[0],
        target=" ".join(parts[1:-1]),
        version=parts[-1],
        scheme="http",
        authority=_get(headers, "host") or "",
        connect=attempt.addr,
        headers=headers,
        label=f"#{ex.id} {parts[0]} {' '.join(parts[1:-1])} → peer {attempt.addr} "
              f"{attempt.status if attempt.status is not None else '-'}",
    )
    body = ex.request_body
    if "chunked" in (_get(ex.request_headers, "transfer-encoding") or "").lower():
        body, _complete = dechunk(body)
        if "chunked" in (_get(headers, "transfer-encoding") or "").lower():
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return _finish(spec, body, ex.request_body_size, ex.truncated)


# --- quoting -----------------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def _wire(text: str) -> bytes:
    """The bytes a decoded header value or target stood for (heads are decoded latin-1)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def shell_quote(data: bytes | str) -> str:
    """One shell word (bash/zsh) holding exactly `data`.

    Printable UTF-8 goes in single quotes; anything with control bytes or bytes that are not
    UTF-8 uses ANSI-C quoting ($'...'), so pasting it into a terminal is safe. NUL cannot be
    an argument: it raises ValueError (bodies holding one go through base64).
    """
    raw = data if isinstance(data, bytes) else _wire(data)
    if b"\x00" in raw:
        raise ValueError("a NUL byte cannot be passed as a shell argument")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not any(ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0
                                    for c in text):
        if text and _SAFE.fullmatch(text):
            return text
        return "'" + text.replace("'", "'\\''") + "'"
    out = []
    for b in raw:
        c = chr(b)
        if c == "\\" or c == "'":
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        elif b == 10:
            out.append("\\n")
        elif b == 13:
            out.append("\\r")
        elif b == 9:
            out.append("\\t")
        else:
            out.append(f"\\x{b:02x}")
    return "$'" + "".join(out) + "'"


def _is_text(body: bytes) -> bool:
    if b"\x00" in body:
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any((ord(c) < 32 and c not in "\t\r\n") or ord(c) == 127 for c in text)


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


INLINE_MAX = 32 * 1024
"""Text bodies up to this size go inline; longer ones go through base64 (argument limits)."""


def _inline(body: bytes) -> bool:
    return len(body) <= INLINE_MAX and _is_text(body)


def _heredoc(body: bytes) -> tuple[str, str]:
    """(`base64 -d <<'B64' | ` prefix, the here-document lines to append after the command)."""
    text = base64.encodebytes(body).decode("ascii")
    return "base64 -d <<'B64' | ", "\n" + text + "B64"


def _comments(spec: RequestSpec, prefix: str = "# ") -> str:
    return "".join(f"{prefix}{n}\n" for n in spec.notes)


# --- curl --------------------------------------------------------------------------------


def _curl_target_ok(target: str) -> bool:
    """curl sends this target unchanged when it is part of the URL (with --path-as-is -g)."""
    return target.startswith("/") and all(33 <= ord(c) < 127 and c != "#" for c in target)


def to_curl(spec: RequestSpec) -> str:
    """A curl command line (bash) sending `spec` to the address that received it."""
    args: list[str] = ["curl"]
    if spec.version.startswith("HTTP/2"):
        args.append("--http2" if spec.scheme == "https" else "--http2-prior-knowledge")
    elif spec.version == "HTTP/1.0":
        args.append("--http1.0")
    else:
        args.append("--http1.1")
    args += ["--path-as-is", "-g"]
    if spec.scheme == "https":
        args.append("-k")  # nginx's certificate is for its names, the copy may use an address
    if spec.method == "HEAD" and not spec.body:
        args.append("--head")
    elif spec.method != "GET" or spec.body:
        args += ["-X", shell_quote(spec.method)]
    if spec.connect:
        args += ["--connect-to", shell_quote(f"::{spec.connect}")]
    names = {k.lower() for k, _v in spec.headers}
    if "host" not in names and spec.authority and not spec.version.startswith("HTTP/2"):
        args += ["-H", "'Host:'"]
    for k, v in spec.headers:
        low = k.lower()
        if spec.chunked and low == "content-length":
            continue
        args += ["-H", shell_quote(f"{k};" if v == "" else f"{k}: {v}")]
    for low in _HOP_BY_CURL:
        if low not in names:
            args += ["-H", shell_quote(f"{low.title()}:")]
    pipe = tail = ""
    if spec.body:
        for name in ("content-type", "expect"):
            if name not in names:
                args += ["-H", shell_quote(f"{name.title()}:")]
        if _inline(spec.body):
            args += ["--data-binary", shell_quote(spec.body)]
        else:
            pipe, tail = _heredoc(spec.body)
            args += ["--data-binary", "@-"]
    url = spec.url
    if not _curl_target_ok(spec.target):
        args += ["--request-target", shell_quote(spec.target)]
        url = "/".join(spec.url.split("/", 3)[:3]) + "/"
    args.append(shell_quote(url))
    return _comments(spec) + pipe + " ".join(args) + tail


# --- HTTPie ------------------------------------------------------------------------------


def to_httpie(spec: RequestSpec) -> str:
    """An HTTPie (`http`, 3.x) command line sending `spec` to the address that received it."""
    args = ["http", "--path-as-is"]
    if spec.scheme == "https":
        args.append("--verify=no")
    pipe = tail = ""
    if not spec.body:
        args.append("--ignore-stdin")
    elif _inline(spec.body):
        args += ["--raw", shell_quote(spec.body)]
    else:
        pipe, tail = _heredoc(spec.body)
    args += [shell_quote(spec.method), shell_quote(spec.direct_url)]
    names = {k.lower() for k, _v in spec.headers}
    if "host" not in names and spec.authority:
        args.append(shell_quote(f"Host:{spec.authority}"))
    for k, v in spec.headers:
        if spec.chunked and k.lower() == "content-length":
            continue
        args.append(shell_quote(f"{k};" if v == "" else f"{k}:{v}"))
    for low in ("user-agent", "accept", "accept-encoding", "connection"):
        if low not in names:
            args.append(shell_quote(f"{low.title()}:"))
    return _comments(spec) + pipe + " ".join(args) + tail


# --- raw ---------------------------------------------------------------------------------


def to_raw(spec: RequestSpec) -> bytes:
    """The request as bytes on the wire (HTTP/1.x framing; HTTP/2 shown in HTTP/1.1 form)."""
    version = "HTTP/1.1" if spec.version.startswith("HTTP/2") else spec.version
    lines = [_wire(f"{spec.method} {spec.target} {version}")]
    names = {k.lower() for k, _v in spec.headers}
    if "host" not in names and spec.authority:
        lines.append(_wire(f"Host: {spec.authority}"))
    lines += [_wire(f"{k}: {v}") for k, v in spec.headers]
    body = spec.body
    if spec.chunked and body:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def raw_text(spec: RequestSpec) -> str:
    """`to_raw` as text for the clipboard: a binary body becomes a base64 note."""
    if spec.body and not _is_text(spec.body):
        head = to_raw(dataclasses.replace(spec, body=b""))
        return (head.decode("utf-8", "replace") +
                f"[binary body, {len(spec.body)} bytes, base64:]\n{_b64(spec.body)}\n")
    return to_raw(spec).decode("utf-8", "replace")


# --- Python requests ---------------------------------------------------------------------


def _requests_call(spec: RequestSpec, var: str = "resp") -> str:
    headers: dict[str, str | None] = {}
    for k, v in spec.headers:
        if spec.chunked and k.lower() in ("content-length", "transfer-encoding"):
            continue
        key = next((h for h in headers if h.lower() == k.lower()), k)
        if key in headers and headers[key] is not None:
            sep = "; " if k.lower() == "cookie" else ", "
            headers[key] = f"{headers[key]}{sep}{v}"
        else:
            headers[key] = v
    lows = {k.lower() for k in headers}
    if "host" not in lows and spec.authority:
        headers["Host"] = spec.authority
    for low in ("user-agent", "accept", "accept-encoding", "connection"):
        if low not in lows:
            headers[low.title()] = None  # requests drops a header set to None
    lines = ["    headers={"] + [f"        {k!r}: {v!r}," for k, v in headers.items()] + ["    },"]
    if spec.body:
        if _inline(spec.body):
            lines.append(f"    data={spec.body!r},")
        else:
            lines.append(f"    data=base64.b64decode({_b64(spec.body)!r}),")
    verify = "    verify=False,  # nginx's certificate names its hosts, not this address\n" \
        if spec.scheme == "https" else ""
    return (f"{var} = requests.request(\n    {spec.method!r},\n    {spec.direct_url!r},\n"
            + "\n".join(lines) + "\n    allow_redirects=False,\n" + verify + ")\n"
            + f"print({var}.status_code, {var}.reason)\n")


def to_requests(spec: RequestSpec) -> str:
    """A Python script sending `spec` with `requests` to the address that received it."""
    return _requests_header([spec]) + _comments(spec) + _requests_call(spec) + "print(resp.text)\n"


def _requests_header(specs: list[RequestSpec]) -> str:
    need_b64 = any(s.body and not _inline(s.body) for s in specs)
    return ("import base64\n" if need_b64 else "") + "import requests\n\n"


# --- dispatch ----------------------------------------------------------------------------


def render(spec: RequestSpec, fmt: str) -> str:
    """`spec` in format `fmt` (a key of FORMATS) as text."""
    if fmt == "curl":
        return to_curl(spec)
    if fmt == "httpie":
        return to_httpie(spec)
    if fmt == "raw":
        return raw_text(spec)
    if fmt == "requests":
        return to_requests(spec)
    raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")


def script(specs: list[RequestSpec], fmt: str) -> str:
    """Several requests as one script (bash for curl/HTTPie, Python for requests)."""
    if fmt in ("curl", "httpie"):
        body = "\n".join(f"# {s.label}\n{render(s, fmt)}\n" for s in specs)
        return "#!/bin/bash\n# ngxscope: " + f"{len(specs)} request(s)\n\n" + body
    if fmt == "requests":
        parts = [_requests_header(specs)]
        for s in specs:
            parts.append(f"# {s.label}\n" + _comments(s) + _requests_call(s) + "\n")
        return "".join(parts)
    if fmt == "raw":
        return "\n".join(raw_text(s) for s in specs)
    raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
