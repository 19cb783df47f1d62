"""The slowest requests, each measured against its own kind: an exchange is listed when it
took at least the p99 of its own route template (not of the whole server), an upstream
attempt when it took at least the p99 of its own peer; with where the time went."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ngxscope.model import Exchange
from ngxscope.store.routes import RouteTemplater
from ngxscope.store.summary import percentile

__all__ = ["MIN_COUNT", "SlowRow", "phases", "slowest", "where_time_went"]

MIN_COUNT = 20
"""A route or peer needs this many samples before its p99 means anything."""


@dataclass(slots=True)
class SlowRow:
    """One exchange at or above the p99 of its route (kind "route") or of a peer (kind "peer")."""

    ex: Exchange
    kind: str
    key: str
    """The route template or the peer address."""
    ms: float
    """The exchange's duration (route) or the attempt's (peer)."""
    p99: float
    where: str
    """The phase that took longest, with its share: "waiting for header 91%"."""

    @property
    def ratio(self) -> float:
        return self.ms / self.p99 if self.p99 > 0 else 0.0


def phases(ex: Exchange) -> list[tuple[str, float]]:
    """(phase, ms) of an exchange: reading the request and nginx before the upstream, retries
    (failed attempts), connect, waiting for the response header, receiving it, and sending to
    the client after the upstream finished. Without upstream: the whole time is nginx's."""
    total = ex.duration_ms
    if not ex.upstream:
        return [("nginx (no upstream)", total)]
    out: list[tuple[str, float]] = []
    first = ex.upstream[0]
    last = ex.upstream[-1]
    if first.start is not None:
        out.append(("client read + nginx", max(0.0, (first.start - ex.start) * 1000.0)))
    retry_ms = sum(a.duration_ms or 0.0 for a in ex.upstream[:-1])
    if retry_ms:
        out.append(("retries", retry_ms))
    connect = last.connect_ms or 0.0
    header = max(0.0, (last.header_ms or 0.0) - connect)
    receive = max(0.0, (last.duration_ms or 0.0) - (last.header_ms or 0.0))
    out += [("connect", connect), ("waiting for header", header), ("receiving", receive)]
    if last.start is not None and last.duration_ms is not None:
        out.append(("sending to client", max(0.0, (ex.end - last.start) * 1000.0 - last.duration_ms)))
    return out


def where_time_went(ex: Exchange) -> str:
    """The longest phase and its share of the exchange's time."""
    total = ex.duration_ms
    name, ms = max(phases(ex), key=lambda p: p[1])
    return f"{name} {min(100.0, 100.0 * ms / total):.0f}%" if total > 0 else name


def slowest(exchanges: Iterable[Exchange], templater: RouteTemplater, limit: int = 200) -> list[SlowRow]:
    """Exchanges ≥ their route's p99 and attempts ≥ their peer's p99, slowest relative to it first."""
    xs = [e for e in exchanges if not e.is_tcp and e.target]
    by_route: dict[str, list[Exchange]] = {}
    by_peer: dict[str, list[tuple[Exchange, float]]] = {}
    for e in xs:
        by_route.setdefault(templater.template(e.path), []).append(e)
        for a in e.upstream:
            if a.duration_ms is not None:
                by_peer.setdefault(a.addr, []).append((e, a.duration_ms))
    rows: list[SlowRow] = []
    for key, group in by_route.items():
        if len(group) < MIN_COUNT:
            continue
        p99 = percentile(sorted(e.duration_ms for e in group), 99) or 0.0
        rows += [SlowRow(e, "route", key, e.duration_ms, p99, where_time_went(e))
                 for e in group if e.duration_ms >= p99]
    for key, pairs in by_peer.items():
        if len(pairs) < MIN_COUNT:
            continue
        p99 = percentile(sorted(ms for _e, ms in pairs), 99) or 0.0
        rows += [SlowRow(e, "peer", key, ms, p99, where_time_went(e)) for e, ms in pairs if ms >= p99]
    rows.sort(key=lambda r: (-r.ratio, -r.ms))
    return rows[:limit]
