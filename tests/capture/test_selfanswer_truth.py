"""Why nginx answered itself, against nginx's own log: `$upstream_cache_status` for a
caching location and `$limit_req_status` for a limited one, request by request (real nginx,
real eBPF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic

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
    by_id = {dict(ex.request_headers).get("X-Lab"): ex for ex in exchanges}
    problems, kinds = [], {}
    for line in log:
        ex = by_id.get(line["lab_id"])
        want = _want(line)
        kinds[want] = kinds.get(want, 0) + 1
        if ex is None or ex.answer != want:
            problems.append(f"{line['uri']} (status {line['status']}, cache {line['cache']!r}, limit "
                            f"{line['limit']!r}): captured {ex.answer if ex else 'nothing'!r}, nginx says {want!r}")
    print(f"\n{len(log)} lines: {kinds}; {len(problems)} mismatches")
    assert not problems, "\n".join(problems)
    assert kinds.get("cache-hit", 0) >= 2 and kinds.get("cache-miss", 0) >= 2
    assert kinds.get("limit-req:perwho", 0) >= 2 and kinds.get("return") == 4
