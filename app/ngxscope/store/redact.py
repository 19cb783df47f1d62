"""Masking secrets before a session leaves the machine (exports, and the window on request).

By default the values of `Authorization`, `Proxy-Authorization`, `Cookie` and
`Set-Cookie` are masked, keeping what helps reading a trace:

    Authorization: Bearer <redacted>        (the scheme stays)
    Cookie: session=<redacted>; theme=<redacted>   (cookie names stay)
    Set-Cookie: session=<redacted>; Path=/; HttpOnly   (attributes stay)

Users add header names (`--redact-header`, `NGXSCOPE_REDACT_HEADERS`) whose whole value
is masked, and query parameter names (`--redact-param`, `NGXSCOPE_REDACT_PARAMS`) whose
values are masked in request targets and in any header value that carries a URL
(`Referer`, `Location`...). The same rules apply to the heads nginx exchanged with its
upstreams and to the raw bytes of a request that could not be parsed. Bodies are left
as they are (their sizes must stay true), except for url-encoded form bodies, whose
configured parameters are masked.

`redact_exchange(ex, policy)` returns a masked copy; the original is never changed.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ngxscope.model import Exchange, UpstreamAttempt

__all__ = [
    "DEFAULT_HEADERS",
    "MASK",
    "RedactPolicy",
    "policy_from_env",
    "redact_exchange",
    "redact_head",
    "redact_header",
    "redact_target",
]

MASK = "<redacted>"
"""What a masked value becomes."""

DEFAULT_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
"""Headers always masked when redaction is on (lower case)."""

ENV_HEADERS = "NGXSCOPE_REDACT_HEADERS"
ENV_PARAMS = "NGXSCOPE_REDACT_PARAMS"

_AUTH = {"authorization", "proxy-authorization"}
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s+\S")


@dataclass(frozen=True, slots=True)
class RedactPolicy:
    """What to mask. `enabled=False` (`--no-redact`) masks nothing."""

    headers: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_HEADERS))
    """Header names (lower case) whose values are masked."""
    params: frozenset[str] = field(default_factory=frozenset)
    """Query / form parameter names whose values are masked (exact, case-sensitive)."""
    enabled: bool = True

    @classmethod
    def make(
        cls,
        headers: Iterable[str] = (),
        params: Iterable[str] = (),
        enabled: bool = True,
    ) -> RedactPolicy:
        """The defaults plus extra header and parameter names."""
        extra = {h.strip().lower() for h in headers if h.strip()}
        return cls(
            headers=frozenset(DEFAULT_HEADERS) | frozenset(extra),
            params=frozenset(p.strip() for p in params if p.strip()),
            enabled=enabled,
        )

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.headers or self.params)


NO_REDACTION = RedactPolicy(headers=frozenset(), params=frozenset(), enabled=False)


def _env_list(name: str) -> list[str]:
    return [p for p in re.split(r"[,\s]+", os.environ.get(name, "")) if p]


def policy_from_env(
    headers: Iterable[str] = (), params: Iterable[str] = (), enabled: bool = True
) -> RedactPolicy:
    """The defaults, `NGXSCOPE_REDACT_HEADERS`/`_PARAMS` (comma or space separated) and
    the given extra names."""
    return RedactPolicy.make(
        [*_env_list(ENV_HEADERS), *headers], [*_env_list(ENV_PARAMS), *params], enabled
    )


# --- values -----------------------------------------------------------------------------


def _redact_pairs(text: str, sep: str, names: frozenset[str]) -> str:
    """Mask the values of the `name=value` pairs (split by `sep`) whose name is in `names`."""
    out = []
    for part in text.split(sep):
        name, eq, _value = part.partition("=")
        out.append(f"{name}={MASK}" if eq and name.strip() in names else part)
    return sep.join(out)


def _cookie(value: str) -> str:
    out = []
    for part in value.split(";"):
        name, eq, _ = part.strip().partition("=")
        if name or eq:
            out.append(f"{name.strip()}={MASK}" if eq else MASK)
    return "; ".join(out)


def _set_cookie(value: str) -> str:
    first, semi, attrs = value.partition(";")
    name, eq, _ = first.partition("=")
    masked = f"{name}={MASK}" if eq else MASK
    return masked + semi + attrs


def _auth(value: str) -> str:
    m = _SCHEME.match(value)
    return f"{m.group(1)} {MASK}" if m else MASK


def redact_target(target: str, policy: RedactPolicy) -> str:
    """Mask the configured parameters in the query of a target or URL."""
    if not policy.enabled or not policy.params or "?" not in target:
        return target
    path, _, rest = target.partition("?")
    query, hash_, frag = rest.partition("#")
    return f"{path}?{_redact_pairs(query, '&', policy.params)}{hash_}{frag}"


def redact_header(name: str, value: str, policy: RedactPolicy) -> str:
    """The value of one header as the policy shows it."""
    if not policy.enabled:
        return value
    low = name.strip().lower()
    if low in policy.headers:
        if low == "cookie":
            return _cookie(value)
        if low == "set-cookie":
            return _set_cookie(value)
        if low in _AUTH:
            return _auth(value)
        return MASK
    if policy.params and "?" in value:
        return redact_target(value, policy)
    return value


_name = operator.itemgetter(0)


_SAFE_NAMES: dict[frozenset[str], set[str]] = {}
"""Per set of masked header names: header names, as written, found not masked by it. Every
exchange passes _headers twice and repeats the same few names: one look in this set costs
a third of lowering and comparing them again."""
_SAFE_MAX = 4096   # names are the client's to choose: remember a bounded number


def _headers(headers: list[tuple[str, str]], policy: RedactPolicy) -> list[tuple[str, str]]:
    """The headers as the policy shows them: `headers` itself when none is masked (every
    exchange passes here; most hold no secret, and a new list cost more than the look)."""
    if not policy.params:
        safe = _SAFE_NAMES.get(policy.headers)
        if safe is None:
            if len(_SAFE_NAMES) >= 64:
                _SAFE_NAMES.clear()
            safe = _SAFE_NAMES[policy.headers] = set()
        if safe.issuperset(map(_name, headers)):
            return headers
        if policy.headers.isdisjoint(map(str.lower, map(str.strip, map(_name, headers)))):
            if len(safe) < _SAFE_MAX:
                safe.update(map(_name, headers))
            return headers
    return [(k, redact_header(k, v, policy)) for k, v in headers]


def redact_head(head: str, policy: RedactPolicy) -> str:
    """Mask a message head given as text: start line (its target) and header lines.

    Anything after the first blank line (a body) is kept as it is.
    """
    if not policy.active or not head:
        return head
    low = head.lower()
    if not (policy.params and "?" in head) and not any(f"{h}:" in low for h in policy.headers):
        return head  # nothing to mask: the common case, kept cheap
    end = head.find("\r\n\r\n")
    end = len(head) if end < 0 else end
    lines = head[:end].split("\n")
    out = []
    for i, raw in enumerate(lines):
        cr = "\r" if raw.endswith("\r") else ""
        line = raw[: len(raw) - len(cr)]
        if i == 0:
            parts = line.split(" ")
            if len(parts) >= 3 and not parts[0].startswith("HTTP/"):
                parts[1] = redact_target(parts[1], policy)
            line = " ".join(parts)
        else:
            name, colon, value = line.partition(":")
            if colon and name and name[0] not in " \t":
                lead = value[: len(value) - len(value.lstrip())]
                line = f"{name}:{lead}{redact_header(name, value.strip(), policy)}"
        out.append(line + cr)
    return "\n".join(out) + head[end:]


def _raw_head(data: bytes, policy: RedactPolicy) -> bytes:
    return redact_head(data.decode("latin-1"), policy).encode("latin-1", "replace")


def _form_body(ex: Exchange, policy: RedactPolicy) -> bytes:
    if not policy.params or not ex.request_body:
        return ex.request_body
    ctype = next((v for k, v in ex.request_headers if k.lower() == "content-type"), "")
    if "x-www-form-urlencoded" not in ctype.lower():
        return ex.request_body
    text = ex.request_body.decode("latin-1")
    return _redact_pairs(text, "&", policy.params).encode("latin-1", "replace")


def _attempt(a: UpstreamAttempt, policy: RedactPolicy) -> UpstreamAttempt:
    request_head = redact_head(a.request_head, policy) if a.request_head else a.request_head
    response_head = redact_head(a.response_head, policy) if a.response_head else a.response_head
    if request_head == a.request_head and response_head == a.response_head:
        return a
    return dataclasses.replace(a, request_head=request_head, response_head=response_head)


def redact_exchange(ex: Exchange, policy: RedactPolicy) -> Exchange:
    """A copy of `ex` with the policy's secrets masked (the same object when disabled, or when
    nothing in it was masked)."""
    if not policy.active:
        return ex
    if not (ex.request_headers or ex.response_headers or ex.request_body or ex.response_body
            or ex.upstream) and (not policy.params or "?" not in ex.target):
        return ex   # e.g. a summary-only exchange: nothing in it can hold a secret
    if (not policy.params and not ex.upstream and (ex.method or not ex.request_body)
            and not (ex.status is None and ex.response_body.startswith(b"HTTP/"))
            and _headers(ex.request_headers, policy) is ex.request_headers
            and _headers(ex.response_headers, policy) is ex.response_headers):
        return ex   # no parameter to mask and no secret header: what most exchanges are
    request_body = ex.request_body
    if not ex.method and request_body:  # unparsed request: the raw bytes hold its head
        request_body = _raw_head(request_body, policy)
    else:
        request_body = _form_body(ex, policy)
    response_body = ex.response_body
    if ex.status is None and response_body.startswith(b"HTTP/"):
        response_body = _raw_head(response_body, policy)
    target = redact_target(ex.target, policy)
    request_headers = _headers(ex.request_headers, policy)
    response_headers = _headers(ex.response_headers, policy)
    upstream = [_attempt(a, policy) for a in ex.upstream]
    if (request_body is ex.request_body and response_body is ex.response_body and target == ex.target
            and request_headers == ex.request_headers and response_headers == ex.response_headers
            and all(a is b for a, b in zip(upstream, ex.upstream, strict=True))):
        return ex   # nothing was masked: no copy (on the capture's path the copy cost more than this check)
    return dataclasses.replace(
        ex,
        target=target,
        # the copy owns its lists, as when every header went through redact_header
        request_headers=list(request_headers) if request_headers is ex.request_headers else request_headers,
        response_headers=list(response_headers) if response_headers is ex.response_headers else response_headers,
        request_body=request_body,
        response_body=response_body,
        upstream=upstream,
    )
