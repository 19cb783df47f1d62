"""The location of every request against nginx's own word: each location of a lab server
writes its own access log format naming it, so the line nginx logs names the location that
finally served the request (after internal redirects). Locations here are told apart only
by exact matches, ^~, regex order and case, nesting, try_files and error_page redirects
(real nginx, real eBPF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic

pytestmark = pytest.mark.capture

# truth name in the log → the location as ngxscope labels it
LOCATIONS = {
    "exact_small": "= /static/small.txt",
    "static_prefix": "/static/",
    "keep_caret": "^~ /static/keep/",
    "json_regex": r"~ \.json$",
    "data_regex": r"~ /data\.",
    "json_ci": r"~* \.JSON$",
    "api_prefix": "/api/",
    "api_status_nested": "~ /status/",
    "backend_named": "@backend",
    "notfound_named": "@notfound",
    "root_prefix": "/",
}

PATHS = [
    "/static/small.txt",  # = beats the prefix
    "/static/small.txt?x=1",
    "/static/page.html",  # prefix, try_files finds the file
    "/static/nope.txt",  # try_files falls back to @backend (proxied)
    "/static/data.json",  # the first regex in order (json_regex, not data_regex)
    "/x/data.txt",  # the second regex
    "/static/keep/a.json",  # ^~ stops the regex search
    "/x/A.JSON",  # ~* after a case-sensitive ~ that does not match
    "/api/echo",  # prefix, proxied
    "/api/status/200",  # nested regex, proxied
    "/api/status/404",  # nested regex, intercepted 404 → error_page → @notfound
    "/api/x.json",  # the outer regex beats the nested prefix search
    "/api/../static/page.html",  # normalised to /static/page.html
    "/nothing/here",  # the catch-all
    "/",
]


def _server(prefix: Path, port: int) -> str:
    formats = "\n".join(
        f"""    log_format loc_{name} escape=json '{{"loc":"{name}","lab_id":"$http_x_lab","uri":"$uri",'
        '"request_uri":"$request_uri","status":"$status","upstream_status":"$upstream_status"}}';"""
        for name in LOCATIONS)

    def log(name: str) -> str:
        return f"access_log {prefix}/logs/loc.log loc_{name};"

    return f"""{formats}
    server {{
        listen 127.0.0.1:{port};
        server_name loclab.test;
        root {prefix}/html;
        location = /static/small.txt {{ {log("exact_small")} }}
        location /static/ {{ try_files $uri @backend; {log("static_prefix")} }}
        location ~ \\.json$ {{ {log("json_regex")} }}
        location ~ /data\\. {{ return 200 "data"; {log("data_regex")} }}
        location ^~ /static/keep/ {{ return 200 "keep"; {log("keep_caret")} }}
        location ~* \\.JSON$ {{ return 200 "ci"; {log("json_ci")} }}
        location /api/ {{
            proxy_pass http://app;
            {log("api_prefix")}
            location ~ /status/ {{
                proxy_pass http://app;
                proxy_intercept_errors on;
                error_page 404 = @notfound;
                {log("api_status_nested")}
            }}
        }}
        location @backend {{ proxy_pass http://app; {log("backend_named")} }}
        location @notfound {{ return 200 "not found, handled"; {log("notfound_named")} }}
        location / {{ return 404; {log("root_prefix")} }}
    }}
"""


def test_every_location_equals_nginx_s(tmp_path: Path, capture_factory: Any) -> None:
    port = free_port()
    nginx = LabNginx(workers=2, prefix=tmp_path, extra_http=_server(tmp_path, port))
    nginx.start()
    try:
        cap = capture_factory(pid=nginx.master_pid)
        traffic = Traffic(port, nginx.tls_port)
        for _round in range(2):
            for path in PATHS:
                traffic.request(False, "GET", path)
        sent = 2 * len(PATHS)
        log = nginx.wait_log_lines(sent, path=tmp_path / "logs" / "loc.log")
        exchanges = cap.wait_for(sent)
        cap.stop()
    finally:
        nginx.stop()
    assert len(log) == sent
    by_id = {dict(ex.request_headers).get("X-Lab"): ex for ex in exchanges}
    seen = set()
    problems = []
    for line in log:
        ex = by_id.get(line["lab_id"])
        if ex is None:
            problems.append(f"{line['request_uri']}: not captured")
            continue
        want = LOCATIONS[line["loc"]]
        seen.add(line["loc"])
        if ex.location != want or ex.server_block != "loclab.test":
            problems.append(f"{line['request_uri']} (uri {line['uri']}, status {line['status']}): "
                            f"captured {ex.server_block} / {ex.location!r}, nginx logged {want!r}")
    print(f"\n{len(log)} log lines, {len(exchanges)} exchanges, {len(seen)} locations, {len(problems)} mismatches")
    assert not problems, "\n".join(problems)
    assert seen == set(LOCATIONS), f"locations never served: {set(LOCATIONS) - seen}"
