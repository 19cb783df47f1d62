"""The kernel's counts (stats records' `counted`) in the window's aggregates."""

from __future__ import annotations

from typing import Any

from factories import make_exchange
from ngxscope.capture.kcounts import hist_bucket
from ngxscope.store.aggcounted import CountedGraphs
from ngxscope.store.aggregate import Aggregator


def _stats(ts: float, n200: int, n502: int) -> dict[str, Any]:
    return {"ts": ts, "counted": {
        "requests": n200 + n502,
        "rows": [{"pid": 11, "server": "s", "peer": None, "status": 200, "n": n200, "request_length": 0,
                  "bytes_sent": 0},
                 {"pid": 12, "server": "s", "peer": "127.0.0.1:8081", "status": 502, "n": n502,
                  "request_length": 0, "bytes_sent": 0}],
        "hist": [{"pid": 11, "server": "s", "peer": None, "class": 2, "which": "request",
                  "buckets": {str(hist_bucket(2000)): n200}},
                 {"pid": 12, "server": "s", "peer": "127.0.0.1:8081", "class": 5, "which": "upstream",
                  "buckets": {str(hist_bucket(30000)): n502}}]}}


def test_counts_feed_graphs_workers_and_peers_once() -> None:
    agg = Aggregator()
    graphs = CountedGraphs(agg)
    agg.feed([make_exchange(id=1, pid=11, status=200, start=99.5, end=100.0)])
    graphs.take(_stats(101.2, 300, 10))
    graphs.take(_stats(102.2, 500, 10))   # 200 more 2xx, no more 5xx
    graphs.take(_stats(103.2, 500, 10))   # nothing new
    assert graphs.requests == 510
    assert agg.total == 511
    assert agg.total_classes[1] == 501 and agg.total_classes[4] == 10
    series = agg.series(10)
    assert int(series.counts[:, 1].sum()) == 501 and int(series.counts[:, 4].sum()) == 10
    workers = {w.pid: w for w in agg.worker_rows()}
    assert workers[11].requests == 501 and workers[12].requests == 10
    assert 1.9 < workers[11].p50 < 2.2   # the counted ones' 2 ms dominate
    peer = next(p for p in agg.peer_rows() if p.addr == "127.0.0.1:8081")
    assert peer.requests >= 10 and 29.0 < peer.p50 < 31.0


def test_a_filter_keeps_counts_out_until_cleared() -> None:
    agg = Aggregator()
    graphs = CountedGraphs(agg)
    agg.set_predicate(lambda ex: ex.status == 500)
    agg.rebuild([])
    graphs.take(_stats(101.2, 300, 10))
    assert agg.total == 0
    agg.set_predicate(None)
    agg.rebuild([])
    graphs.refeed()
    assert agg.total == 310
