"""The location of every request against nginx's own word: each location of a lab server
writes its own access log format naming it, so the line nginx logs names the location that
finally served the request (after internal redirects). Locations here are told apart only
by exact matches, ^~, regex order and case, nesting, try_files and error_page redirects;
then rewrite ... last/break and `if`, which only the location read from nginx's memory
(r->loc_conf) gets right (real nginx, real eBPF)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ngxscope.capture.nginxconf import ConfigMap
from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange

from .truth import by_lab_id

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


def _serve_twice(tmp_path: Path, capture_factory: Any, server: Callable[[Path, int], str], paths: list[str],
                 log_name: str) -> tuple[list[dict[str, Any]], list[Exchange], ConfigMap | None]:
    """A lab nginx with `server(prefix, port)` added, captured while each path is asked
    twice: (its log lines from logs/`log_name`, the exchanges, the configuration read)."""
    port = free_port()
    nginx = LabNginx(workers=2, prefix=tmp_path, extra_http=server(tmp_path, port))
    nginx.start()
    try:
        cap = capture_factory(pid=nginx.master_pid)
        traffic = Traffic(port, nginx.tls_port)
        for _round in range(2):
            for path in paths:
                traffic.request(False, "GET", path)
        sent = 2 * len(paths)
        log = nginx.wait_log_lines(sent, path=tmp_path / "logs" / log_name)
        exchanges = cap.wait_for(sent)
        cap.stop()
    finally:
        nginx.stop()
    assert len(log) == sent
    return log, exchanges, cap.recorder.config


def test_every_location_equals_nginx_s(tmp_path: Path, capture_factory: Any) -> None:
    log, exchanges, cmap = _serve_twice(tmp_path, capture_factory, _server, PATHS, "loc.log")
    problems, matcher_wrong, seen = _compare(log, exchanges, LOCATIONS, cmap, "loclab.test")
    print(f"\n{len(log)} log lines, {len(exchanges)} exchanges, {len(seen)} locations, {len(problems)} mismatches "
          f"(read from nginx's memory), the configuration matcher alone: {len(matcher_wrong)} mismatches")
    assert not problems, "\n".join(problems)
    # the matcher (the fallback where nginx's memory is not read) is right here too
    assert not matcher_wrong, "\n".join(matcher_wrong)
    assert seen == set(LOCATIONS), f"locations never served: {set(LOCATIONS) - seen}"


def _compare(log: list[dict[str, Any]], exchanges: list[Exchange], names: dict[str, str], cmap: ConfigMap | None,
             server: str) -> tuple[list[str], list[str], set[str]]:
    """(mismatches of the captured location, of the configuration matcher alone, locations seen)."""
    assert cmap is not None
    pairs, problems = by_lab_id(log, exchanges, label=lambda line: line["request_uri"])
    seen: set[str] = set()
    matcher_wrong: list[str] = []
    for line, ex in pairs:
        want = names[line["loc"]]
        seen.add(line["loc"])
        what = f"{line['request_uri']} (uri {line['uri']}, status {line['status']})"
        if ex.location != want or ex.server_block != server or ex.location_via != "nginx":
            problems.append(f"{what}: captured {ex.server_block} / {ex.location!r} ({ex.location_via}), "
                            f"nginx logged {want!r}")
        block = cmap.block_of(ex.server, ex.host)
        matched = cmap.resolve(block, ex.path, [(a.addr, a.status) for a in ex.upstream])
        if (matched.label if matched else None) != want:
            matcher_wrong.append(f"{what}: matcher {matched.label if matched else None!r}, nginx logged {want!r}")
    return problems, matcher_wrong, seen


# rewrite ... last / break, `if` and a server-level rewrite: only nginx's memory knows
REWRITES = {
    "old_prefix": "/old/",
    "new_prefix": "/new/",
    "brk_prefix": "/brk/",
    "cond_prefix": "/cond/",
    "iflog_prefix": "/iflog/",
    "re_regex": r"~ ^/re/(\d+)$",
    "rif_regex": "~ ^/rif/",
    "eif_exact": "= /eif",
    "root_prefix": "/",
}
REWRITE_PATHS = [
    "/old/a",  # rewrite ... last: served by /new/
    "/new/b",
    "/brk/c",  # rewrite ... break: stays, proxied
    "/cond/d",  # the `if` is false: stays
    "/cond/d?go=1",  # the `if` rewrites ... last: /new/
    "/iflog/e?v=1",  # `return` inside an `if` block: named as its location
    "/iflog/e",
    "/re/42",  # a regex location rewrites to /new/
    "/srv/f",  # the server-level rewrite: /new/
    "/rif/g?v=1",  # `if` inside a regex location (nginx names the block, not its modifier)
    "/eif?v=1",  # `if` inside an exact location
    "/elsewhere",
]


def _rewrite_server(prefix: Path, port: int) -> str:
    formats = "\n".join(
        f"""    log_format rw_{name} escape=json '{{"loc":"{name}","lab_id":"$http_x_lab","uri":"$uri",'
        '"request_uri":"$request_uri","status":"$status"}}';"""
        for name in REWRITES)

    def log(name: str) -> str:
        return f"access_log {prefix}/logs/rw.log rw_{name};"

    return f"""{formats}
    server {{
        listen 127.0.0.1:{port};
        server_name rwlab.test;
        root {prefix}/html;
        rewrite ^/srv/(.*)$ /new/$1;
        location /old/ {{ rewrite ^/old/(.*)$ /new/$1 last; {log("old_prefix")} }}
        location /new/ {{ return 200 "new"; {log("new_prefix")} }}
        location /brk/ {{ rewrite ^ /api/echo break; proxy_pass http://app; {log("brk_prefix")} }}
        location /cond/ {{ if ($arg_go) {{ rewrite ^ /new/from-if last; }} return 200 "cond"; {log("cond_prefix")} }}
        location /iflog/ {{ if ($arg_v = "1") {{ return 200 "if"; }} return 200 "plain"; {log("iflog_prefix")} }}
        location ~ ^/re/(\\d+)$ {{ rewrite ^/re/(\\d+)$ /new/$1 last; {log("re_regex")} }}
        location ~ ^/rif/ {{ if ($arg_v) {{ return 200 "rif"; }} return 200 "x"; {log("rif_regex")} }}
        location = /eif {{ if ($arg_v) {{ return 200 "eif"; }} return 200 "x"; {log("eif_exact")} }}
        location / {{ return 404; {log("root_prefix")} }}
    }}
"""


def test_rewrite_and_if_read_from_nginx_s_memory(tmp_path: Path, capture_factory: Any) -> None:
    log, exchanges, cmap = _serve_twice(tmp_path, capture_factory, _rewrite_server, REWRITE_PATHS, "rw.log")
    problems, matcher_wrong, seen = _compare(log, exchanges, REWRITES, cmap, "rwlab.test")
    print(f"\n{len(log)} log lines over {len(seen)} locations: {len(problems)} mismatches read from nginx's "
          f"memory; the configuration matcher alone would have {len(matcher_wrong)}")
    assert not problems, "\n".join(problems)
    assert seen == set(REWRITES) - {"old_prefix", "re_regex"}, seen  # those two always rewrite away
    # the point of reading it: where rewrite/if moved the request, the matcher guesses wrong
    assert len(matcher_wrong) >= 8, matcher_wrong
