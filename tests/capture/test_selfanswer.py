"""Answer kinds from a parsed configuration (captured truth: test_selfanswer_truth.py)."""

from __future__ import annotations

from pathlib import Path

from ngxscope.capture.nginxconf import load_config
from ngxscope.capture.selfanswer import self_answer

CONF = """events {} http { upstream app { server 10.0.0.2:80; }
  server { listen 80; limit_conn perip 10;
    location /c/ { proxy_cache z; proxy_pass http://app; }
    location /c/off/ { proxy_cache off; proxy_pass http://app; }
    location /r/ { limit_req zone=one burst=5; limit_req zone=two; limit_req_status 429; proxy_pass http://app; }
    location /p/ { proxy_pass http://app; }
    location = /x { return 302 /y; }
  } }"""


def test_kinds(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text(CONF)
    m = load_config(str(conf))
    block = m.block_of("127.0.0.1:80", "")

    def kind(path: str, status: int | None, upstream: bool) -> str | None:
        return self_answer(m.resolve(block, path, [("10.0.0.2:80", 200)] if upstream else []), status, upstream)

    assert kind("/c/a", 200, False) == "cache-hit"
    assert kind("/c/a", 200, True) == "cache-miss"
    assert kind("/c/off/a", 200, True) is None
    assert kind("/r/a", 429, False) == "limit-req:one"
    assert kind("/r/a", 503, False) == "limit-conn:perip"  # server-level limit_conn, default status
    assert kind("/p/a", 503, False) == "limit-conn:perip"
    assert kind("/p/a", 200, True) is None
    assert kind("/x", 302, False) == "return"
    assert kind("/p/a", 499, True) == "client-abort"
    assert self_answer(None, 200, False) is None


def test_http_level_limits_from_an_included_file(tmp_path: Path) -> None:
    """limit_req/limit_conn declared and applied in the http block (one of them from an
    included file, the server too) reach every location without its own; a zone whose key
    is empty for the request never limits it."""
    from ngxscope.capture.selfanswer import CacheTracker
    from ngxscope.model import Exchange

    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "limits.conf").write_text("limit_conn_zone $arg_cw zone=perarg:1m; limit_conn perarg 1;")
    (tmp_path / "conf.d" / "site.conf").write_text(
        "server { listen 80; location /p/ { proxy_pass http://app; } location /own/ { limit_req zone=mine; "
        "proxy_pass http://app; } }")
    conf = tmp_path / "n.conf"
    conf.write_text("events {} http { upstream app { server 10.0.0.2:80; } "
                    "limit_req_zone $binary_remote_addr zone=perip:1m rate=1r/s; limit_req zone=perip; "
                    f"include {tmp_path}/conf.d/*.conf; }}")
    m = load_config(str(conf))
    block = m.block_of("127.0.0.1:80", "")
    loc = m.resolve(block, "/p/x")
    assert loc is not None and loc.label == "/p/"
    assert self_answer(loc, 503, False) == "limit-req:perip"
    own = m.resolve(block, "/own/x")
    assert self_answer(own, 503, False) == "limit-req:mine"  # its own limit_req replaces the http block's
    tracker = CacheTracker()
    ex = Exchange(id=1, start=1.0, end=1.1, pid=1, client="10.1.1.1:5000", server="127.0.0.1:80", tls=False,
                  method="GET", target="/p/x?cw=", status=503)
    assert tracker.answer(ex, loc) == "limit-req:perip"
    ex.target = "/p/x?cw=a"
    assert tracker.answer(ex, loc) == "limit-req:perip"  # both could: the first listed
    m2 = load_config(str(conf))
    loc2 = m2.resolve(m2.block_of("127.0.0.1:80", ""), "/p/x")
    assert loc2 is not None
    loc2.parent.parent.limit_req = None  # type: ignore[union-attr]  (the http level's limit_req gone)
    assert tracker.answer(ex, loc2) == "limit-conn:perarg"
    ex.target = "/p/x"  # $arg_cw empty: that zone never limits
    assert tracker.answer(ex, loc2) is None


def test_cache_kinds_from_what_went_through() -> None:
    import tempfile

    from ngxscope.capture.selfanswer import CacheTracker
    from ngxscope.model import Exchange, UpstreamAttempt

    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "n.conf"
        c.write_text("events {} http { upstream app { server 10.0.0.2:80; } server { listen 80; "
                     "location /c/ { proxy_cache z; proxy_cache_valid 200 1s; proxy_cache_bypass $arg_nc $cookie_nc; "
                     "proxy_cache_use_stale updating; proxy_pass http://app; } } }")
        m = load_config(str(c))
    loc = m.resolve(m.block_of("127.0.0.1:80", ""), "/c/a")
    t = CacheTracker()

    def ex(at: float, target: str = "/c/a", up: int | None = 200, status: int = 200,
           headers: list[tuple[str, str]] | None = None) -> Exchange:
        e = Exchange(id=1, start=at, end=at + 0.01, pid=1, client="10.1.1.1:5000", server="127.0.0.1:80",
                     tls=False, method="GET", target=target, status=status, request_headers=headers or [])
        if up is not None:
            e.upstream = [UpstreamAttempt(addr="10.0.0.2:80", status=up, start=at, header_ms=1.0)]
        return e

    assert t.answer(ex(100.2), loc) == "cache-miss"
    assert t.answer(ex(100.5, up=None), loc) == "cache-hit"
    assert t.answer(ex(101.9, up=None), loc) == "cache-hit"  # valid until second 101, whole seconds
    assert t.answer(ex(102.0, up=None), loc) == "cache-updating"  # expired, served while another updates
    assert t.answer(ex(102.1), loc) == "cache-expired"
    assert t.answer(ex(102.2, target="/c/a?nc=1"), loc) == "cache-bypass"
    assert t.answer(ex(102.3, target="/c/b", headers=[("Cookie", "x=1; nc=yes")]), loc) == "cache-bypass"
    assert t.answer(ex(102.4, target="/c/a?nc=0"), loc) == "cache-miss"  # "0" does not bypass
    assert t.answer(ex(105.0, up=502), loc) == "cache-stale"
    assert t.answer(ex(105.1, up=304), loc) == "cache-revalidated"


def test_went_away_says_how_far_the_response_had_got() -> None:
    from ngxscope.capture.selfanswer import CacheTracker, went_away
    from ngxscope.model import Exchange

    ex = Exchange(id=1, start=1.0, end=2.0, pid=1, client="c:1", server="s:2", tls=False, method="GET",
                  target="/big", status=200, response_headers=[("Content-Length", "1000")],
                  response_body_size=250, response_bytes=400)
    assert went_away(ex) == "the client went away after 250 of 1,000 bytes of the response body (25%; 400 bytes sent in all)"
    assert CacheTracker().answer(ex, None) == "client-abort" and ex.error and "250 of 1,000" in ex.error
    ex.response_body_size = 1000
    assert went_away(ex) is None
    ex.method, ex.response_body_size = "HEAD", 0
    assert went_away(ex) is None
    ex.method, ex.summary_only = "GET", True
    assert went_away(ex) is None
