"""The kernel's counts (the stats record's `counted`) in the figures, and the histogram
bucketing the kernel uses (its Python mirror, checked against the kernel by
tests/capture/test_kcounts.py)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from factories import make_exchange
from ngxscope.capture.kcounts import hist_bucket, hist_bucket_high
from ngxscope.store.hdrhist import HdrHistogram
from ngxscope.store.kcounted import parse_counted
from ngxscope.store.summary import format_summary, summarize


@given(st.integers(min_value=0, max_value=1 << 40))
def test_kernel_bucket_is_the_store_histogram_index(us: int) -> None:
    assert hist_bucket(us) == HdrHistogram.index(us / 1000.0)


@given(st.integers(min_value=0, max_value=1 << 36))
def test_bucket_high_bounds_its_values(us: int) -> None:
    i = hist_bucket(us)
    if i < HdrHistogram.SIZE - 1:
        assert us < hist_bucket_high(i)
        assert hist_bucket(hist_bucket_high(i)) == i + 1
        lo, _ = HdrHistogram.bucket_ms(i)
        assert math.isclose(lo * 1000, hist_bucket_high(i - 1) if i else 0, abs_tol=1e-6)


COUNTED = {
    "requests": 1000,
    "rows": [
        {"pid": 11, "server": "localhost", "peer": None, "status": 200, "n": 900, "request_length": 90000,
         "bytes_sent": 180000, "upstream_tries": 0, "upstream_failed": 0},
        {"pid": 12, "server": "localhost", "peer": "127.0.0.1:8081", "status": 404, "n": 100,
         "request_length": 10000, "bytes_sent": 30000, "upstream_tries": 100, "upstream_failed": 0},
    ],
    "hist": [
        {"pid": 11, "server": "localhost", "peer": None, "class": 2, "which": "request",
         "buckets": {str(hist_bucket(1000)): 900}},
        {"pid": 12, "server": "localhost", "peer": "127.0.0.1:8081", "class": 4, "which": "request",
         "buckets": {str(hist_bucket(50000)): 100}},
        {"pid": 12, "server": "localhost", "peer": "127.0.0.1:8081", "class": 4, "which": "upstream",
         "buckets": {str(hist_bucket(49000)): 100}},
    ],
    "slow_ms": {"localhost": 3.0},
}


def test_counted_requests_join_the_figures() -> None:
    rows = [make_exchange(id=i, pid=11, status=503, start=100.0 + i, end=100.2 + i) for i in range(10)]
    counted = parse_counted(COUNTED)
    assert counted is not None and counted.requests == 1000
    s = summarize(rows, counted=counted)
    assert s.requests == 1010 and s.counted == 1000
    assert s.classes["2xx"] == 900 and s.classes["4xx"] == 100 and s.classes["5xx"] == 10
    assert s.request_bytes == 100000 + sum(ex.request_bytes for ex in rows)
    # 900 at 1 ms, 100 at 50 ms, 10 rows at 200 ms: p50 in 1 ms's bucket, p99 in 50 ms's
    lo, hi = HdrHistogram.bucket_ms(hist_bucket(1000))
    assert lo <= s.latency.p50 <= hi
    lo, hi = HdrHistogram.bucket_ms(hist_bucket(50000))
    assert s.latency.p95 is not None and lo <= s.latency.p95 <= hi
    assert s.latency.max is not None and s.latency.max >= 200.0
    workers = {w.pid: w for w in s.workers}
    assert workers[11].requests == 910 and workers[12].requests == 100
    assert workers[12].classes["4xx"] == 100
    peer = {p.addr: p for p in s.peers}["127.0.0.1:8081"]
    rows_attempts = sum(a.addr == peer.addr for ex in rows for a in ex.upstream)
    assert peer.requests == 100 + rows_attempts and peer.classes["4xx"] == 100
    lo, hi = HdrHistogram.bucket_ms(hist_bucket(49000))
    assert peer.duration.p50 is not None and lo <= peer.duration.p50 <= hi
    assert "1000 counted in the kernel" in format_summary(s)


def test_bad_counted_objects_are_ignored() -> None:
    assert parse_counted(None) is None and parse_counted([1]) is None
    c = parse_counted({"requests": 3, "rows": [{"pid": "x"}], "hist": [{"buckets": 5}]})
    assert c is not None and c.total.requests == 0
