"""Reading upstream groups and server blocks from an nginx configuration (read-only)."""

from __future__ import annotations

from pathlib import Path

from ngxscope.capture.nginxconf import compiled_conf_path, config_path_of, load_config

CONF = """
events {}
http {
    include {inc};
    upstream app { server 10.0.0.2:8080; server 10.0.0.3:8080 weight=2; keepalive 8; }
    upstream other { server 10.0.0.2:8080; }
    server {
        listen 80 default_server;
        server_name shop.example.com www.example.com;
        location /api/ { proxy_pass http://app; }
        location /other/ { proxy_pass http://other/x/; }
        location = /exact { proxy_pass http://10.0.0.9:9000; }
    }
    server { listen 127.0.0.1:8443 ssl; server_name *.example.org; }
    server { listen 80; server_name _; }
}
stream { upstream db { server 10.0.0.5:5432; } server { listen 5432; proxy_pass db; } }
"""


def test_groups_locations_and_servers(tmp_path: Path) -> None:
    inc = tmp_path / "more.conf"
    inc.write_text("upstream extra { server 127.0.0.1:9999; }\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.replace("{inc}", str(inc)))
    cmap = load_config(str(conf))
    assert cmap.note == ""
    assert cmap.groups["10.0.0.2:8080"] == ["app", "other"]
    assert cmap.group_of("10.0.0.3:8080") == "app"
    assert cmap.group_of("127.0.0.1:9999") == "extra", "includes are followed"
    assert cmap.group_of("10.0.0.2:8080", "/other/a") == "other", "the location decides a shared peer"
    assert cmap.group_of("10.0.0.2:8080", "/api/a") == "app"
    assert cmap.group_of("10.0.0.9:9000") == "10.0.0.9:9000", "a peer named in proxy_pass"
    assert cmap.group_of("192.0.2.1:80") is None
    assert cmap.server_of("10.1.1.1:80", "www.example.com") == "shop.example.com"
    assert cmap.server_of("10.1.1.1:80", "unknown.test") == "shop.example.com", "default_server"
    assert cmap.server_of("127.0.0.1:8443", "a.example.org") == "*.example.org"
    assert cmap.server_of("127.0.0.1:9", "x") is None
    assert len(cmap.servers) == 3, "stream servers are not http server blocks"


def test_missing_file_is_a_note(tmp_path: Path) -> None:
    cmap = load_config(str(tmp_path / "nope.conf"))
    assert cmap.groups == {} and cmap.note


def test_config_path_from_master_title() -> None:
    title = "nginx: master process /usr/sbin/nginx -p /srv/x -c conf/nginx.conf -g daemon off;"
    assert config_path_of(title) == ("/srv/x/conf/nginx.conf", "/srv/x")
    assert config_path_of("nginx: master process /usr/sbin/nginx")[0] == "/etc/nginx/nginx.conf"
    assert compiled_conf_path("/usr/sbin/nginx") == "/etc/nginx/nginx.conf"


NOLIVE = """
events {}
http {
    upstream pair { server 10.0.0.2:8080; server 10.0.0.3:8080 down; server 10.0.0.4:8080 backup; }
    upstream gone { server 10.0.0.5:8080 down; }
    server {
        listen 80;
        location /pair/ { proxy_pass http://pair; }
        location /gone/ { proxy_pass http://gone; }
        location /once/ { proxy_pass http://pair; proxy_next_upstream_tries 1; }
        location /off/ { proxy_pass http://pair; proxy_next_upstream off; }
        location /direct/ { proxy_pass http://10.0.0.9:9000; }
    }
}
"""


def test_no_live_upstreams_attempt(tmp_path: Path) -> None:
    """nginx's "no live upstreams" attempt: the group's name, when it could still have tried
    a peer but found none live (ngx_http_upstream_tries: servers not down, backups included)."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(NOLIVE)
    cmap = load_config(str(conf))
    assert cmap.tries["pair"] == 2 and cmap.tries["gone"] == 0
    block = cmap.block_of("127.0.0.1:80", "")

    def nolive(path: str, status: int, tried: int, failed: bool = True) -> str | None:
        return cmap.nolive_group(cmap.resolve(block, path), status, tried, failed)

    assert nolive("/gone/x", 502, 0) == "gone"
    assert nolive("/pair/x", 502, 0) == "pair"
    assert nolive("/pair/x", 502, 1) == "pair", "one peer failed, one try left, none live"
    assert nolive("/pair/x", 502, 2) is None, "every try used: nginx gave up, no extra attempt"
    assert nolive("/pair/x", 502, 1, failed=False) is None, "a peer answered (its own 502)"
    assert nolive("/pair/x", 504, 0) is None and nolive("/pair/x", 200, 0) is None
    assert cmap.nolive_group(cmap.resolve(block, "/pair/x"), 502, 1, True, "POST") is None, "non-idempotent"
    assert nolive("/once/x", 502, 1) is None, "proxy_next_upstream_tries 1"
    assert nolive("/off/x", 502, 1) is None and nolive("/off/x", 502, 0) == "pair"
    assert nolive("/direct/x", 502, 0) is None, "a peer named directly is never busy"


def test_unix_listener_completed_from_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n server { listen unix:/run/ngx/http-a.sock; server_name a; }\n"
                    " server { listen unix:/run/ngx/other.sock; server_name b; }\n}\n"
                    "stream { server { listen unix:/run/ngx/http-s.sock; return x; } }\n")
    cmap = load_config(str(conf))
    assert cmap.unix_listener("unix:/run/ngx/http") == "unix:/run/ngx/http-a.sock", "stream listeners aside"
    assert cmap.unix_listener("unix:/run/ngx/") is None, "two http listeners fit"
    assert cmap.unix_listener("unix:/elsewhere") is None
    assert cmap.server_of("unix:/run/ngx/other.sock", "") == "b"


def test_server_name_regex_python_cannot_compile(tmp_path: Path) -> None:
    """nginx-tests' http_server_name.t: a PCRE-only server_name regex (\\Q…\\E) stopped the
    capture; it matches nothing here, the other names still do."""
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n server { listen 80; server_name ~^\\Qwww.\\E(.+)$; }\n"
                    " server { listen 80; server_name ~^b\\.; }\n}\n")
    cmap = load_config(str(conf))
    assert cmap.server_of("10.0.0.1:80", "www.example.com") == "~^\\Qwww.\\E(.+)$", "the default (first)"
    assert cmap.server_of("10.0.0.1:80", "b.example.com") == "~^b\\."
