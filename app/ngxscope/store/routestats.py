"""Per route template figures over a time window: the Routes panel's rows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ngxscope.model import Exchange
from ngxscope.store.routes import OTHER, RouteTemplater
from ngxscope.store.summary import location_key, percentile

__all__ = ["RouteRow", "route_regex", "route_rows"]


@dataclass(slots=True)
class RouteRow:
    """One route template's figures over the window."""

    template: str
    requests: int = 0
    rate: float = 0.0
    """Requests per second over the window."""
    errors: int = 0
    """5xx responses, or none at all."""
    error_rate: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    response_bytes: int = 0
    upstream_share: float = 0.0
    """Fraction of its requests that went to an upstream."""
    spark: list[int] = field(default_factory=list)
    """Requests per bucket over the window, oldest first."""
    _ms: list[float] = field(default_factory=list)
    _up: int = 0


def route_regex(template: str) -> str | None:
    """A `path~` filter regex matching the paths of a template (None for `{other}`)."""
    if template == OTHER:
        return None
    out, pos = [], 0
    for m in re.finditer(r"\{[A-Za-z_][A-Za-z0-9_]*\}", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append("[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "^" + "".join(out) + "$"


def route_rows(exchanges: Iterable[Exchange], templater: RouteTemplater, end: float, window_s: float,
               buckets: int = 30, by_location: bool = False) -> list[RouteRow]:
    """The routes of the HTTP exchanges that ended within `window_s` before `end`, busiest
    first; with `by_location`, their locations instead ("server block \u203a location", as
    `store.diff` keys them; `template` then holds that)."""
    start = end - window_s
    width = window_s / buckets
    rows: dict[str, RouteRow] = {}
    for ex in exchanges:
        if ex.end < start or ex.end > end or ex.is_tcp or not ex.target:
            continue
        if by_location and not ex.location:
            continue
        t = location_key(ex) if by_location else templater.template(ex.path)
        r = rows.get(t)
        if r is None:
            r = rows[t] = RouteRow(t, spark=[0] * buckets)
        r.requests += 1
        r.errors += ex.status is None or ex.status >= 500
        r.response_bytes += ex.response_bytes
        r._up += bool(ex.upstream)
        r._ms.append(ex.duration_ms)
        r.spark[min(buckets - 1, int((ex.end - start) / width))] += 1
    for r in rows.values():
        r._ms.sort()
        r.p50, r.p95, r.p99 = (percentile(r._ms, q) for q in (50, 95, 99))
        r.rate = r.requests / window_s if window_s > 0 else 0.0
        r.error_rate = r.errors / r.requests
        r.upstream_share = r._up / r.requests
        r._ms = []
    return sorted(rows.values(), key=lambda r: (-r.requests, r.template))
