"""`ngxscope stats` figures on a session with known numbers."""

from __future__ import annotations

from factories import make_exchange
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.summary import format_summary, percentile, summarize


def known() -> list[Exchange]:
    """100 requests over 10 s: durations 1..100 ms; 2 workers; statuses 90x200, 5x404,
    4x502, 1 without answer; /a 60 times, /b 30, /c 10; upstream retries on /c."""
    out = []
    for i in range(100):
        start = 1000.0 + i * 0.1
        ms = float(i + 1)
        status: int | None = 200 if i < 90 else (404 if i < 95 else (502 if i < 99 else None))
        path = "/a" if i < 60 else ("/b" if i < 90 else "/c")
        ups = [UpstreamAttempt(addr="10.0.0.1:80", status=200, duration_ms=ms / 2,
                               header_ms=ms / 4, request_bytes=100, response_bytes=1000)]
        if path == "/c":
            ups = [UpstreamAttempt(addr="10.0.0.9:80", status=None, duration_ms=1.0),
                   UpstreamAttempt(addr="10.0.0.1:80", status=502, duration_ms=ms / 2,
                                   header_ms=ms / 4, request_bytes=100, response_bytes=1000)]
        out.append(make_exchange(start=start, end=start + ms / 1000.0, status=status,
                                 pid=11 if i % 2 else 22, target=f"{path}?i={i}", upstream=ups,
                                 error=None if status else "no answer"))
    return out


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_known_figures() -> None:
    s = summarize(known(), top=2)
    assert s.requests == 100
    assert abs(s.duration_s - 10.0) < 1e-6
    assert abs(s.rate - 10.0) < 1e-6
    assert s.classes == {"1xx": 0, "2xx": 90, "3xx": 0, "4xx": 5, "5xx": 4, "none": 1}
    lat = s.latency
    assert (round(lat.p50 or 0, 6), round(lat.p95 or 0, 6), round(lat.p99 or 0, 6),
            round(lat.max or 0, 6)) == (50.0, 95.0, 99.0, 100.0)
    assert s.errors == 1
    assert [(r.path, r.requests) for r in s.top_by_count] == [("/a", 60), ("/b", 30)]
    # total time: /a = 1..60 = 1830 ms, /b = 61..90 = 2265 ms, /c = 91..100 = 955 ms
    assert [(r.path, round(r.total_ms)) for r in s.top_by_time] == [("/b", 2265), ("/a", 1830)]
    w = {x.pid: x for x in s.workers}
    assert w[11].requests == w[22].requests == 50
    assert round(w[11].latency.max or 0) == 100 and round(w[22].latency.max or 0) == 99
    peers = {p.addr: p for p in s.peers}
    main, dead = peers["10.0.0.1:80"], peers["10.0.0.9:80"]
    assert main.requests == 100 and main.classes["2xx"] == 90 and main.classes["5xx"] == 10
    assert main.errors == 10 and abs(main.error_rate - 0.10) < 1e-9
    assert main.retries == 10 and main.next == 0
    assert (dead.requests, dead.errors, dead.error_rate, dead.retries, dead.next) == (10, 10, 1.0, 0, 10)
    assert main.duration.p50 == 25.0 and main.header.p99 == 24.75
    assert main.bytes_sent == 100 * 100 and main.bytes_received == 100 * 1000
    d = s.to_dict()
    assert d["requests"] == 100 and "_ms" not in d["workers"][0]


def test_text_report() -> None:
    text = format_summary(summarize(known()), "s.ngxs")
    for needle in ("requests  100", "10.0 req/s", "2xx 90 (90.0%)", "p50 50.0 ms", "p99 99.0 ms",
                   "max 100.0 ms", "top paths by requests", "top paths by total time", "workers",
                   "upstream peers", "10.0.0.9:80", "100.0"):
        assert needle in text, needle
    assert format_summary(summarize([]), "e").endswith("requests  0\n")


def test_summary_only_exchanges_are_counted_not_errors() -> None:
    exchanges = [
        make_exchange(status=200),
        make_exchange(status=200, summary_only=True),
        make_exchange(status=503, summary_only=True),
        make_exchange(status=None, error="malformed request"),
    ]
    s = summarize(exchanges)
    assert (s.requests, s.summary_only, s.errors) == (4, 2, 1)
    assert s.classes["2xx"] == 2 and s.classes["5xx"] == 1
    assert "summary-only 2" in format_summary(s) and "errors 1" in format_summary(s)
    assert [e.summary_only for e in exchanges] == [False, True, True, False]
