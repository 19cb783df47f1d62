"""Aggregator: per-second buckets, percentiles, workers, peers, ring recycling, filters."""

from __future__ import annotations

import math

import numpy as np

from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.aggregate import (
    BIN_EDGES_MS,
    NBINS,
    Aggregator,
    hist_percentiles,
    latency_bin,
    status_class,
)


def ex(end: float, status: int | None = 200, ms: float = 10.0, pid: int = 1,
       upstream: list[UpstreamAttempt] | None = None) -> Exchange:
    return Exchange(id=0, start=end - ms / 1000, end=end, pid=pid, client="c", server="s",
                    tls=False, status=status, upstream=upstream or [])


def test_status_class_and_bins() -> None:
    assert [status_class(s) for s in (101, 200, 304, 404, 503, None, 999)] == [0, 1, 2, 3, 4, 5, 5]
    assert latency_bin(0) == 0 and latency_bin(-1) == 0 and latency_bin(float("nan")) == 0
    assert latency_bin(1e9) == NBINS - 1
    b = latency_bin(10.0)
    assert BIN_EDGES_MS[b] <= 10.0 * 1.0001 and BIN_EDGES_MS[b + 1] > 10.0


def test_hist_percentiles_close_to_truth() -> None:
    rng = np.random.default_rng(1)
    ms = rng.lognormal(2.5, 0.8, 20000)
    hist = np.zeros(NBINS)
    for v in ms:
        hist[latency_bin(float(v))] += 1
    p = hist_percentiles(hist, (0.5, 0.95, 0.99))
    for got, q in zip(p, (50, 95, 99), strict=True):
        want = np.percentile(ms, q)
        assert abs(got - want) / want < 0.15
    assert np.isnan(hist_percentiles(np.zeros(NBINS), (0.5,))[0])


def test_series_counts_by_second_and_class() -> None:
    agg = Aggregator(seconds=120)
    t0 = 1_000_000.0
    agg.feed([ex(t0 + 0.1), ex(t0 + 0.5, 404), ex(t0 + 1.2, 503), ex(t0 + 1.3, None)])
    s = agg.series(5)
    assert len(s.t) == 5 and s.t[-1] == 0
    assert s.counts[-2].tolist() == [0, 1, 0, 1, 0, 0]
    assert s.counts[-1].tolist() == [0, 0, 0, 0, 1, 1]
    assert s.counts[:-2].sum() == 0
    assert s.hist.sum() == 4
    assert math.isfinite(s.pct[-1][0]) and np.isnan(s.pct[0][0])


def test_ring_recycles_and_ignores_too_old() -> None:
    agg = Aggregator(seconds=10)
    agg.feed([ex(100.5)])
    agg.feed([ex(125.5)])  # 25 s later: slot of 105 reused; 100 is out of the window
    agg.feed([ex(101.5)])  # too old now
    s = agg.series(10)
    assert s.counts.sum() == 1
    assert agg.total == 2


def test_workers_and_rate() -> None:
    agg = Aggregator()
    t0 = 2_000_000.0
    batch = [ex(t0 + k / 10, pid=7 if k % 2 else 8) for k in range(120)]  # 12 s at 10/s
    agg.feed(batch)
    rows = agg.worker_rows()
    assert [r.pid for r in rows] == [7, 8]
    assert rows[0].requests == 60 and rows[0].classes[1] == 60
    assert abs(rows[0].rate - 5.0) < 0.01
    assert abs(agg.rate() - 10.0) < 0.01
    assert 8 < rows[0].p50 < 12


def test_peers() -> None:
    a_ok = UpstreamAttempt("10.0.0.2:8080", status=200, header_ms=5, duration_ms=8,
                           request_bytes=100, response_bytes=1000)
    a_bad = UpstreamAttempt("10.0.0.3:8080", status=None, request_bytes=50)
    agg = Aggregator()
    agg.feed([ex(50.0, upstream=[a_bad, a_ok]), ex(50.2, upstream=[a_ok])])
    rows = {r.addr: r for r in agg.peer_rows()}
    ok, bad = rows["10.0.0.2:8080"], rows["10.0.0.3:8080"]
    assert ok.requests == 2 and ok.errors == 0 and ok.bytes_received == 2000
    assert 7 < ok.p50 < 9 and 4 < ok.header_p50 < 6
    assert bad.requests == 1 and bad.errors == 1 and bad.error_rate == 1.0
    assert np.isnan(bad.p50)


def test_predicate_and_rebuild() -> None:
    agg = Aggregator()
    items = [ex(10.0, 200), ex(10.1, 500), ex(10.2, 502)]
    agg.set_predicate(lambda e: (e.status or 0) >= 500)
    agg.rebuild(items)
    assert agg.total == 2
    agg.set_predicate(None)
    agg.rebuild(items)
    assert agg.total == 3
    agg.reset()
    assert agg.total == 0 and agg.latest is None and agg.rate() == 0.0


def test_recent_percentiles() -> None:
    agg = Aggregator()
    assert all(math.isnan(v) for v in agg.recent_percentiles())
    agg.feed([ex(500.0 + k / 100, ms=20.0) for k in range(500)])  # 5 s of 20 ms
    p50, _p95, p99 = agg.recent_percentiles()
    assert 18 < p50 < 22 and 18 < p99 < 22
