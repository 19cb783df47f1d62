"""Why nginx answered a request itself, or how its cache served it, from the location that
served the request (`capture.locations`) and what the capture saw.

- `cache-hit`: the location caches (proxy_cache...) and no upstream attempt was made:
  nginx's `$upstream_cache_status` HIT, STALE, UPDATING or REVALIDATED-from-cache alike;
- `cache-miss`: it caches and the request went upstream (MISS, EXPIRED, BYPASS...);
- `limit-req:ZONE` / `limit-conn:ZONE`: the location limits, no upstream attempt, and the
  status is its limit_req_status / limit_conn_status (503 unless set); with several zones
  the first listed is named (nginx does not say which one refused);
- `return`: the location answers with `return` (no upstream);
- `client-abort`: status 499, the client closed the connection before nginx answered.

`limit_req`/`limit_conn` set in the http block (outside every server) are not seen.
"""

from __future__ import annotations

from ngxscope.capture.locations import Location

__all__ = ["ANSWERS", "self_answer"]

ANSWERS = ("cache-hit", "cache-miss", "limit-req", "limit-conn", "return", "client-abort")
"""The kinds of answer (limits carry their zone after a colon)."""


def self_answer(loc: Location | None, status: int | None, upstream: bool) -> str | None:
    """The answer kind of a request served by `loc` with `status`, that went `upstream` or not."""
    if status == 499:
        return "client-abort"
    if loc is None:
        return None
    cache = loc.inherited("cache")
    caches = cache is not None and cache != "off"
    if not upstream:
        limit_req = loc.inherited("limit_req")
        if limit_req and status == (loc.inherited("limit_req_status") or 503):
            return f"limit-req:{limit_req[0]}"
        limit_conn = loc.inherited("limit_conn")
        if limit_conn and status == (loc.inherited("limit_conn_status") or 503):
            return f"limit-conn:{limit_conn[0]}"
        if loc.returns is not None:
            return "return"
        if caches and loc.proxy is not None and status is not None:
            return "cache-hit"
        return None
    return "cache-miss" if caches else None
