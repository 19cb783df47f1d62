"""Slowest per route and per peer, and where the time went."""

from __future__ import annotations

from factories import make_exchange
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.routes import RouteTemplater
from ngxscope.store.slowest import phases, slowest, where_time_went


def _ex(path: str, ms: float, peer: str | None, t: float, header_ms: float | None = None) -> Exchange:
    e = make_exchange(target=path, start=t)
    e.end = t + ms / 1000
    e.upstream = []
    if peer:
        e.upstream = [UpstreamAttempt(addr=peer, status=200, start=t + 0.0005, connect_ms=0.1,
                                      header_ms=header_ms if header_ms is not None else ms * 0.8,
                                      duration_ms=ms * 0.9)]
    return e


def test_each_against_its_own_route() -> None:
    exs = [_ex("/fast/1", 2.0 + i * 0.01, None, float(i)) for i in range(100)]
    exs += [_ex("/slow/1", 500.0 + i, "10.0.0.2:80", 200.0 + i) for i in range(100)]
    outlier = _ex("/fast/2", 40.0, None, 300.0)  # slow for /fast/{id}, fast for the server
    exs.append(outlier)
    rows = slowest(exs, RouteTemplater())
    route_rows = [r for r in rows if r.kind == "route"]
    assert route_rows[0].ex is outlier and route_rows[0].key == "/fast/{id}"
    assert route_rows[0].ratio > 10
    assert all(r.ms >= r.p99 for r in rows)
    assert {r.key for r in route_rows} == {"/fast/{id}", "/slow/{id}"}
    peers = [r for r in rows if r.kind == "peer"]
    assert peers and all(r.key == "10.0.0.2:80" for r in peers)


def test_where_the_time_went() -> None:
    e = _ex("/x", 100.0, "10.0.0.2:80", 0.0, header_ms=85.0)
    names = dict(phases(e))
    assert names["waiting for header"] == 84.9 and where_time_went(e) == "waiting for header 85%"
    assert where_time_went(_ex("/y", 10.0, None, 0.0)) == "nginx (no upstream) 100%"
    retried = _ex("/z", 100.0, None, 0.0)
    retried.upstream = [UpstreamAttempt(addr="10.0.0.3:80", status=None, start=0.0005, duration_ms=70.0),
                        UpstreamAttempt(addr="10.0.0.2:80", status=200, start=0.071, connect_ms=0.2,
                                        header_ms=5.0, duration_ms=25.0)]
    assert where_time_went(retried).startswith("retries")
