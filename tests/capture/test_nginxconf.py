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
