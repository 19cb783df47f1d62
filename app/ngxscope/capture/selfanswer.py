"""Why nginx answered a request itself, or how its cache served it, from the location that
served the request (`capture.locations`) and what the capture saw: nginx's
`$upstream_cache_status` and `$limit_req_status` told from the outside.

- `limit-req:ZONE` / `limit-conn:ZONE`: the location limits (its own limit_req/limit_conn,
  else its server's, else the http block's), no upstream attempt, and the status is its
  limit_req_status / limit_conn_status (503 unless set); with several zones the first
  listed is named (nginx does not say which one refused);
- `return`: the location answers with `return` (no upstream);
- `client-abort`: status 499, the client closed the connection before nginx answered; or
  the client went away in the middle of the response (`went_away`: how far it had got);
- for a location that caches (proxy_cache...), `cache-*` as `$upstream_cache_status`:
  `cache-hit` (no upstream attempt), `cache-miss` (went upstream, the capture never saw the
  key cached), `cache-expired` (went upstream for a key the capture saw cached),
  `cache-bypass` (a proxy_cache_bypass value is set: $arg_, $http_, $cookie_, $args are
  evaluated), `cache-stale` (the upstream failed or answered 5xx, the client got the cached
  response; or, without an attempt, the cached response had expired and
  proxy_cache_use_stale has no `updating`: a background update), `cache-updating` (no
  attempt, the cached response had expired and proxy_cache_use_stale has `updating`: another
  request is refreshing it), `cache-revalidated` (the upstream answered 304 to nginx's
  conditional request and the client got the cached response).

What the capture knows of the cache is what it saw go through it (`CacheTracker`): when a
key was stored and for how long (X-Accel-Expires, Cache-Control max-age / no-store /
no-cache / private, Set-Cookie and proxy_cache_valid, as nginx decides; nginx counts in
whole seconds). A key stored before the capture started, or evicted, reads as a miss.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from urllib.parse import parse_qsl

from ngxscope.capture.locations import Location
from ngxscope.model import Exchange

__all__ = ["ANSWERS", "CacheTracker", "self_answer", "went_away"]

ANSWERS = ("cache-hit", "cache-miss", "cache-expired", "cache-bypass", "cache-stale", "cache-updating",
           "cache-revalidated", "limit-req", "limit-conn", "return", "client-abort")
"""The kinds of answer (limits carry their zone after a colon)."""

_KEYS = 100_000
"""Cache keys remembered at most (the oldest forgotten first)."""

_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _limit(loc: Location, status: int | None, ex: Exchange | None = None) -> str | None:
    """limit-req:ZONE / limit-conn:ZONE when `status` is the one the location's limits answer
    with; with `ex`, zones whose key is empty for it (nginx never limits those) are passed over."""
    limits = _limits(loc)
    if not limits:
        return None   # most locations limit nothing: every exchange asks
    keys = loc.inherited("limit_keys") or {}
    for kind, zones, limit_status in limits:
        if status != limit_status:
            continue
        if ex is not None:
            zones = [z for z in zones if z not in keys or _expand(keys[z], ex, loc, unknown="?")]
        if zones:
            return f"{kind}:{zones[0]}"
    return None


_LIMITS = " limits"   # the memo key of `_limits` (no directive has a space in its name)


def _limits(loc: Location) -> tuple[tuple[str, list[str], int], ...]:
    """(answer kind, zones, the status it answers with) of each kind of limit the location
    has (inherited as nginx inherits them), remembered with what it inherits."""
    memo = loc.memo
    if memo is not None and _LIMITS in memo:
        found: tuple[tuple[str, list[str], int], ...] = memo[_LIMITS]
        return found
    out = []
    for kind, directive in (("limit-req", "limit_req"), ("limit-conn", "limit_conn")):
        zones = loc.inherited(directive)
        if zones:
            out.append((kind, zones, loc.inherited(directive + "_status") or 503))
    limits = tuple(out)
    if memo is not None:
        memo[_LIMITS] = limits
    return limits


def self_answer(loc: Location | None, status: int | None, upstream: bool, ex: Exchange | None = None) -> str | None:
    """The answer kind of a request served by `loc` with `status`, that went `upstream` or
    not, without the cache's history (hit or miss only; see `CacheTracker`); with the
    exchange `ex`, limit zones whose key it leaves empty are passed over."""
    if status == 499:
        return "client-abort"
    if loc is None:
        return None
    cache = loc.inherited("cache")
    caches = cache is not None and cache != "off"
    if not upstream:
        limited = _limit(loc, status, ex)
        if limited:
            return limited
        if loc.returns is not None:
            return "return"
        if caches and loc.proxy is not None and status is not None:
            return "cache-hit"
        return None
    return "cache-miss" if caches else None


def _headers(ex: Exchange) -> dict[str, str]:
    """The response headers nginx got from the upstream (its last attempt's head when
    captured, else what nginx sent on), names lower-case."""
    head = ex.upstream[-1].response_head if ex.upstream else None
    if head:
        pairs = [line.split(":", 1) for line in head.splitlines()[1:] if ":" in line]
        return {k.strip().lower(): v.strip() for k, v in pairs}
    return {k.lower(): v for k, v in ex.response_headers}


def _variable(name: str, ex: Exchange, loc: Location) -> str | None:
    """The value of nginx variable `name` for this exchange (None: one not known here)."""
    headers = {k.lower(): v for k, v in ex.request_headers}
    query = ex.target.split("?", 1)[1] if "?" in ex.target else ""
    if name.startswith("arg_"):
        return next((v for k, v in parse_qsl(query, keep_blank_values=True) if k == name[4:]), "")
    if name.startswith("http_"):
        return headers.get(name[5:].replace("_", "-"), "")
    if name.startswith("cookie_"):
        for part in headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name[7:]:
                return v
        return ""
    return {"args": query, "query_string": query, "request_uri": ex.target, "uri": ex.path,
            "scheme": "https" if ex.tls else "http", "host": (ex.host or "").split(":")[0].lower(),
            "proxy_host": loc.inherited("proxy") or "", "request_method": ex.method,
            "remote_addr": ex.client.rsplit(":", 1)[0].strip("[]"),
            "binary_remote_addr": ex.client.rsplit(":", 1)[0].strip("[]")}.get(name)


def _expand(text: str, ex: Exchange, loc: Location, unknown: str = "") -> str:
    """`text` with its variables' values; `unknown` for a variable not known here."""
    def value(m: re.Match[str]) -> str:
        v = _variable(m.group(1), ex, loc)
        return unknown if v is None else v
    return _VAR.sub(value, text)


def _ttl(ex: Exchange, loc: Location, status: int) -> int | None:
    """Seconds nginx keeps this response in its cache (None: not cached)."""
    h = _headers(ex)
    if "set-cookie" in h:
        return None
    accel = h.get("x-accel-expires")
    if accel is not None and accel.isdigit():
        return int(accel) or None
    cc = h.get("cache-control", "").lower()
    if any(word in cc for word in ("no-cache", "no-store", "private")):
        return None
    m = re.search(r"max-age=(\d+)", cc)
    if m:
        return int(m.group(1)) or None
    for codes, secs in loc.inherited("cache_valid") or ():
        if codes is None or status in codes:
            return secs or None
    return None


def went_away(ex: Exchange) -> str | None:
    """How far the response had got when its client went away in the middle of it (nginx
    logs the status it began with, $bytes_sent so far and an empty $request_completion):
    fewer body bytes written than its Content-Length; None for a whole response (a chunked
    one is not judged), a 499 (nginx never answered) or one counted from the summary."""
    if ex.summary_only or ex.status in (None, 499, 204, 304) or ex.method == "HEAD" or ex.is_tcp:
        return None
    length = ""
    for k, v in ex.response_headers:   # every exchange passes here: lower() only what may match
        if len(k) == 14 and k.lower() == "content-length":
            length = v
            break
    if not length.strip().isdigit() or ex.response_body_size >= int(length):
        return None
    whole = int(length)
    return (f"the client went away after {ex.response_body_size:,} of {whole:,} bytes of the response body "
            f"({ex.response_body_size / whole:.0%}; {ex.response_bytes:,} bytes sent in all)")


class CacheTracker:
    """The answer kinds of the requests a capture sees, with what it saw of nginx's cache."""

    __slots__ = ("_stored",)

    def __init__(self) -> None:
        self._stored: OrderedDict[tuple[str, str], int] = OrderedDict()
        """(cache zone, key) → the whole second (nginx's valid_sec) the response expires."""

    def answer(self, ex: Exchange, loc: Location | None) -> str | None:
        partial = went_away(ex)
        if partial is not None:
            if ex.error is None:
                ex.error = partial
            return "client-abort"
        kind = self_answer(loc, ex.status, bool(ex.upstream), ex)
        if loc is None or kind is None or not kind.startswith("cache-"):
            return kind
        zone = str(loc.inherited("cache"))
        key = (zone, _expand(loc.inherited("cache_key") or "$scheme$proxy_host$request_uri", ex, loc))
        expires = self._stored.get(key)
        now = int(ex.start)
        if not ex.upstream:
            if expires is not None and now > expires:
                return "cache-updating" if "updating" in (loc.inherited("cache_use_stale") or ()) else "cache-stale"
            return "cache-hit"
        if any(_expand(v, ex, loc) not in ("", "0") for v in loc.inherited("cache_bypass") or ()):
            if ex.upstream[-1].status is not None:
                self._store(key, ex, loc, ex.upstream[-1].status)  # a bypassed response is stored
            return "cache-bypass"
        last = ex.upstream[-1].status
        if (last is None or last >= 500) and ex.status is not None and ex.status != last and ex.status < 500:
            return "cache-stale"  # nginx answered from its cache what the upstream failed to
        if last == 304 and ex.status != 304:
            self._store(key, ex, loc, 200)
            return "cache-revalidated"
        self._stored.pop(key, None)
        if last is not None:
            self._store(key, ex, loc, last)
        return "cache-expired" if expires is not None and now > expires else "cache-miss"

    def _store(self, key: tuple[str, str], ex: Exchange, loc: Location, status: int) -> None:
        if ex.method not in ("GET", "HEAD"):
            return
        ttl = _ttl(ex, loc, status)
        if ttl is None:
            return
        # nginx: valid_sec = ngx_time() + ttl at the upstream's header, in whole seconds
        att = ex.upstream[-1]
        at = att.start + (att.header_ms or 0.0) / 1000.0 if att.start is not None else ex.end
        self._stored[key] = int(at) + ttl
        self._stored.move_to_end(key)
        while len(self._stored) > _KEYS:
            self._stored.popitem(last=False)
