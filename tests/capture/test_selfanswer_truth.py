"""Why nginx answered itself, against nginx's own log: `$upstream_cache_status` for a
caching location and `$limit_req_status` for a limited one, request by request (real nginx,
real eBPF)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange

from .truth import lab_id

pytestmark = pytest.mark.capture


def _conf(p: Path, port: int) -> str:
    fmt = ('{"lab_id":"$http_x_lab","uri":"$request_uri","status":"$status","cache":"$upstream_cache_status",'
           '"limit":"$limit_req_status","upstream_addr":"$upstream_addr"}')
    log = f"access_log {p}/logs/answers.log answers;"
    return f"""
    log_format answers escape=json '{fmt}';
    proxy_cache_path {p}/tmp/cache keys_zone=c1:1m;
    limit_req_zone $arg_who zone=perwho:1m rate=1r/m;
    server {{
        listen 127.0.0.1:{port};
        server_name answers.test;
        location /cached/ {{ proxy_cache c1; proxy_cache_valid 200 10m; proxy_pass http://app/api/; {log} }}
        location /limited/ {{ limit_req zone=perwho nodelay; proxy_pass http://app/api/; {log} }}
        location = /ret {{ return 200 "here"; {log} }}
        location /plain/ {{ proxy_pass http://app/api/; {log} }}
    }}
"""


def _want(line: dict[str, Any]) -> str | None:
    """The answer nginx's own variables say."""
    if line["cache"] in ("HIT", "STALE", "UPDATING"):
        return "cache-hit"
    if line["cache"] in ("MISS", "EXPIRED", "BYPASS", "REVALIDATED"):
        return "cache-miss"
    if line["limit"] in ("REJECTED", "REJECTED_DRY_RUN"):
        return "limit-req:perwho"
    if line["uri"] == "/ret":
        return "return"
    return None


def _check_answers(log: list[dict[str, Any]], exchanges: list[Exchange],
                   want_of: Callable[[dict[str, Any]], str | None],
                   describe: Callable[[dict[str, Any]], str]) -> tuple[list[str], dict[str | None, int]]:
    """(each line whose exchange's `answer` is not the one nginx's variables say, how many
    lines said each answer)."""
    by_id = {lab_id(ex): ex for ex in exchanges}
    problems: list[str] = []
    kinds: dict[str | None, int] = {}
    for line in log:
        ex = by_id.get(line["lab_id"])
        want = want_of(line)
        kinds[want] = kinds.get(want, 0) + 1
        if ex is None or ex.answer != want:
            problems.append(f"{describe(line)}: captured {ex.answer if ex else 'nothing'!r}, nginx says {want!r}")
    return problems, kinds


def test_cache_and_limits_match_nginx_s_variables(tmp_path: Path, capture_factory: Any) -> None:
    port = free_port()
    nginx = LabNginx(workers=2, prefix=tmp_path, extra_http=_conf(tmp_path, port))
    nginx.start()
    try:
        cap = capture_factory(pid=nginx.master_pid)
        traffic = Traffic(port, nginx.tls_port)
        paths = []
        for i in range(4):
            paths += [f"/cached/items/{i % 2}", f"/limited/echo?who=w{i % 2}", "/ret", "/plain/echo",
                      f"/limited/echo?n={i}"]  # no `who`: an empty key is never limited
        for path in paths:
            traffic.request(False, "GET", path)
        log = nginx.wait_log_lines(len(paths), path=tmp_path / "logs" / "answers.log")
        exchanges = cap.wait_for(len(paths))
        cap.stop()
    finally:
        nginx.stop()
    problems, kinds = _check_answers(log, exchanges, _want, lambda line: (
        f"{line['uri']} (status {line['status']}, cache {line['cache']!r}, limit {line['limit']!r})"))
    print(f"\n{len(log)} lines: {kinds}; {len(problems)} mismatches")
    assert not problems, "\n".join(problems)
    assert kinds.get("cache-hit", 0) >= 2 and kinds.get("cache-miss", 0) >= 2
    assert kinds.get("limit-req:perwho", 0) >= 2 and kinds.get("return") == 4


_CACHE_KINDS = {"HIT": "cache-hit", "MISS": "cache-miss", "EXPIRED": "cache-expired", "BYPASS": "cache-bypass",
                "STALE": "cache-stale", "UPDATING": "cache-updating", "REVALIDATED": "cache-revalidated"}


def _cache_conf(p: Path, port: int, origin: int) -> str:
    fmt = ('{"lab_id":"$http_x_lab","uri":"$request_uri","status":"$status","cache":"$upstream_cache_status",'
           '"limit":"$limit_req_status","conn":"$limit_conn_status","upstream_status":"$upstream_status"}')
    log = f"access_log {p}/logs/cache.log cachelog;"
    return f"""
    log_format cachelog escape=json '{fmt}';
    proxy_cache_path {p}/tmp/cache2 keys_zone=c2:1m;
    limit_req_zone $arg_who zone=httpwho:1m rate=1r/m;
    limit_conn_zone $arg_cw zone=httpconn:1m;
    limit_req zone=httpwho nodelay;
    limit_conn httpconn 1;
    server {{
        listen 127.0.0.1:{origin};
        server_name origin.test;
        root {p}/html;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name cachelab.test;
        location /c/ {{ proxy_cache c2; proxy_cache_valid 200 1s; proxy_cache_bypass $arg_nocache;
                       proxy_pass http://app/api/; {log} }}
        location /s/ {{ proxy_cache c2; proxy_cache_key $uri; proxy_cache_valid 200 1s;
                       proxy_cache_use_stale error http_500; proxy_pass http://app/api/status/$arg_s; {log} }}
        location /rv/ {{ proxy_cache c2; proxy_cache_valid 200 1s; proxy_cache_revalidate on;
                        proxy_pass http://127.0.0.1:{origin}/; {log} }}
        location /u/ {{ proxy_cache c2; proxy_cache_valid 200 1s; proxy_cache_use_stale updating;
                       proxy_pass http://app/api/; {log} }}
        location /lim/ {{ proxy_pass http://app/api/; {log} }}
    }}
"""


def _cache_want(line: dict[str, Any]) -> str | None:
    if line["limit"] in ("REJECTED", "REJECTED_DRY_RUN"):
        return "limit-req:httpwho"
    if line["conn"] in ("REJECTED", "REJECTED_DRY_RUN"):
        return "limit-conn:httpconn"
    return _CACHE_KINDS.get(line["cache"])


def test_cache_statuses_and_http_level_limits_match_nginx_s(tmp_path: Path, capture_factory: Any) -> None:
    """HIT, MISS, EXPIRED, BYPASS, STALE, UPDATING and REVALIDATED told apart against
    $upstream_cache_status; limit_req and limit_conn declared and applied in the http block
    (not in the location) against $limit_req_status / $limit_conn_status."""
    port, origin = free_port(), free_port()
    nginx = LabNginx(workers=1, prefix=tmp_path, extra_http=_cache_conf(tmp_path, port, origin))
    nginx.start()
    try:
        cap = capture_factory(pid=nginx.master_pid)
        traffic = Traffic(port, nginx.tls_port)
        get = lambda path: traffic.request(False, "GET", path)  # noqa: E731
        expire = lambda: time.sleep(2.2)  # noqa: E731  (proxy_cache_valid 1s, nginx counts whole seconds)

        def together(first: str, second: str, lag: float = 0.2) -> None:
            t = threading.Thread(target=get, args=(first,))
            t.start()
            time.sleep(lag)
            get(second)
            t.join()

        for path in ("/c/echo", "/c/echo", "/c/echo?nocache=1", "/s/k?s=200", "/rv/static/page.html", "/u/slow?ms=700",
                     "/lim/echo?who=a", "/lim/echo?who=a"):
            get(path)
        expire()
        for path in ("/c/echo", "/c/echo", "/s/k?s=500", "/rv/static/page.html"):
            get(path)
        together("/u/slow?ms=700", "/u/slow?ms=700")  # the second is served stale while the first updates
        together("/lim/slow?ms=600&cw=x", "/lim/echo?cw=x")  # one connection per cw: the second is refused
        sent = 16
        log = nginx.wait_log_lines(sent, path=tmp_path / "logs" / "cache.log")
        exchanges = cap.wait_for(sent + 2)  # and the two requests nginx sent its origin server
        cap.stop()
    finally:
        nginx.stop()
    mine = [ex for ex in exchanges if ex.server_block == "cachelab.test"]
    problems, kinds = _check_answers(log, mine, _cache_want, lambda line: (
        f"{line['uri']} (status {line['status']}, cache {line['cache']!r}, upstream "
        f"{line['upstream_status']!r}, limit {line['limit']!r}/{line['conn']!r})"))
    print(f"\n{len(log)} lines: {kinds}; {len(problems)} mismatches")
    assert not problems, "\n".join(problems)
    assert set(kinds) >= {*_CACHE_KINDS.values(), "limit-req:httpwho", "limit-conn:httpconn"}, kinds
