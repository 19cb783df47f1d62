"""nginx's choice of location, from a parsed configuration (no nginx run: the capture
test tests/capture/test_location_truth.py holds it against nginx's own logs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.capture.locations import normalize_uri
from ngxscope.capture.nginxconf import ConfigMap, load_config
from ngxscope.capture.reqlog import (
    LOCF_EXACT,
    LOCF_NAMED,
    LOCF_NONAME,
    LOCF_NOREGEX,
    LOCF_REGEX,
    location_label,
)

CONF = r"""
events {}
http {
    upstream app { server 10.0.0.2:8080; }
    upstream other { server 10.0.0.3:8080; }
    server {
        listen 80;
        server_name a.test;
        root ROOT;
        location = /exact { return 200; }
        location /exact { return 200; }
        location /static/ { }
        location ^~ /static/img/ { }
        location ~ \.png$ { }
        location ~* \.(png|jpg)$ { }
        location /api/ {
            proxy_pass http://app;
            location ~ ^/api/.*\.json$ { proxy_pass http://app; }
            location /api/deep/ { proxy_pass http://app; }
        }
        location ^~ /api/v2/ { proxy_pass http://other; }
        location ~ "^/items/(?<id>\d+)$" { return 200; }
        location /files/ { try_files $uri $uri/ @backend; }
        location @backend { proxy_pass http://app; }
        location /err/ {
            proxy_pass http://app;
            proxy_intercept_errors on;
            error_page 404 = @fallback;
            error_page 502 503 /oops;
        }
        location = /oops { return 200; }
        location @fallback { return 200; }
        location /gone/ { return 410; error_page 410 = @fallback; }
        location / { }
    }
}
"""


@pytest.fixture
def cmap(tmp_path: Path) -> ConfigMap:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "here.txt").write_text("x")
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.replace("ROOT", str(tmp_path)))
    m = load_config(str(conf))
    assert m.note == ""
    return m


def _loc(cmap: ConfigMap, path: str, attempts: list[tuple[str, int | None]] | None = None) -> str | None:
    return cmap.location_of(cmap.block_of("127.0.0.1:80", "a.test"), path, attempts)


@pytest.mark.parametrize(("path", "want"), [
    ("/exact", "= /exact"),
    ("/exactly", "/exact"),
    ("/static/a.css", "/static/"),
    ("/static/a.png", r"~ \.png$"),  # a regex beats a plain prefix
    ("/static/a.PNG", r"~* \.(png|jpg)$"),  # case-sensitive regex first, in config order
    ("/static/img/a.png", "^~ /static/img/"),  # ^~ stops the regex search
    ("/api/x", "/api/"),
    ("/api/x.json", r"~ ^/api/.*\.json$"),  # nested regex
    ("/api/deep/x", "/api/deep/"),  # nested prefix
    ("/api/deep/x.png", r"~ \.png$"),  # the outer regexes still beat a nested prefix
    ("/api/v2/x.png", "^~ /api/v2/"),  # the longest prefix is ^~
    ("/items/42", r'~ ^/items/(?<id>\d+)$'),
    ("/items/x", "/"),
    ("/a/../static/./b", "/static/"),  # normalised first
    ("/%61pi/x", "/api/"),
    ("//api//x", "/api/"),
    ("http://a.test/api/x?q=1", "/api/"),
])
def test_first_match_is_nginx_s(cmap: ConfigMap, path: str, want: str) -> None:
    assert _loc(cmap, path) == want


def test_try_files_falls_back_when_the_request_went_upstream(cmap: ConfigMap) -> None:
    assert _loc(cmap, "/files/missing", [("10.0.0.2:8080", 200)]) == "@backend"
    # no upstream: a file was served (a proxying fallback would have gone upstream)
    assert _loc(cmap, "/files/here.txt") == "/files/"
    assert _loc(cmap, "/files/missing") == "/files/"


def test_error_page_after_an_intercepted_upstream_error(cmap: ConfigMap) -> None:
    assert _loc(cmap, "/err/a", [("10.0.0.2:8080", 200)]) == "/err/"
    assert _loc(cmap, "/err/a", [("10.0.0.2:8080", 404)]) == "@fallback"
    assert _loc(cmap, "/err/a", [("10.0.0.2:8080", 503)]) == "= /oops"
    assert _loc(cmap, "/err/a", [("10.0.0.2:8080", 500)]) == "/err/"
    assert _loc(cmap, "/gone/x") == "@fallback"  # return 410 with error_page 410


def test_try_files_stat_sees_files(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""events {{}} http {{ server {{ listen 80; root {tmp_path};
        location / {{ try_files $uri /index.html; }}
        location = /index.html {{ }} }} }}""")
    (tmp_path / "there").write_text("x")
    m = load_config(str(conf))
    block = m.block_of("127.0.0.1:80", "")
    assert m.location_of(block, "/there", []) == "/"
    assert m.location_of(block, "/nothere", []) == "= /index.html"


def test_no_server_or_tree_is_unknown(cmap: ConfigMap) -> None:
    assert cmap.location_of(None, "/x") is None
    assert cmap.location_of(cmap.block_of("127.0.0.1:80", ""), "*") is None


_FUZZ_CONF: list[ConfigMap] = []


@given(path=st.text(max_size=40), status=st.none() | st.integers(100, 599), upstream=st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_path_gives_a_location_or_none(path: str, status: int | None, upstream: bool) -> None:
    """No path or upstream answer makes the matcher raise (fuzz); `location /` catches all."""
    if not _FUZZ_CONF:
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as fh:
            fh.write(CONF.replace("ROOT", "/nonexistent"))
        _FUZZ_CONF.append(load_config(fh.name))
    got = _loc(_FUZZ_CONF[0], "/" + path, [("10.0.0.2:8080", status)] if upstream else [])
    assert isinstance(got, str)


@pytest.mark.parametrize(("raw", "want"), [
    ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/b/..", "/a/"), ("/../x", "/x"), ("/a%2Fb?x", "/a/b"),
    ("/", "/"),
])
def test_normalize(raw: str, want: str) -> None:
    assert normalize_uri(raw) == want


@pytest.mark.parametrize(("name", "flags", "want"), [
    (b"/exact", LOCF_EXACT, "= /exact"),
    (b"/exact", 0, "/exact"),
    (b"/static/img/", LOCF_NOREGEX, "^~ /static/img/"),
    (rb"\.png$", LOCF_REGEX, r"~ \.png$"),
    (rb"\.(png|jpg)$", LOCF_REGEX, r"~* \.(png|jpg)$"),  # nginx's memory does not say ~ or ~*: the tree does
    (b"@backend", LOCF_NAMED, "@backend"),
    (b"/api/", LOCF_NONAME, "/api/"),  # an `if` block inside /api/ is named as it
    (rb"\.png$", LOCF_NONAME, r"~ \.png$"),  # ... but not flagged as its location: any modifier
    (rb"^/api/.*\.json$", LOCF_REGEX, r"~ ^/api/.*\.json$"),  # nested
    (b"/api/de", 0, "/api/deep/"),  # a name cut short (LOC_NAME_CAP) matches by its start
])
def test_the_location_nginx_names_is_found_in_the_tree(cmap: ConfigMap, name: bytes, flags: int, want: str) -> None:
    block = cmap.block_of("127.0.0.1:80", "a.test")
    length = 10 if name == b"/api/de" else len(name)
    loc, via = cmap.locate(block, "/whatever", [], location_label(name, length, flags), from_nginx=True)
    assert (loc.label if loc else None, via) == (want, "nginx")


def test_a_name_not_in_the_configuration_falls_back_to_the_matcher(cmap: ConfigMap) -> None:
    block = cmap.block_of("127.0.0.1:80", "a.test")
    loc, via = cmap.locate(block, "/api/x", [], "/changed-on-disk/", from_nginx=True)
    assert (loc.label if loc else None, via) == ("/api/", "config")
    assert cmap.locate(block, "/api/x", [], None, from_nginx=True) == (None, None)  # the server level
    loc, via = cmap.locate(block, "/api/x", [])
    assert (loc.label if loc else None, via) == ("/api/", "config")


def test_a_built_tree_remembers_what_each_location_inherits_and_finds(cmap: ConfigMap) -> None:
    """Naming asks the same questions for every exchange: once the tree is built, answers
    are remembered, and they are what walking the parents (and matching the name) gives."""
    block = cmap.block_of("127.0.0.1:80", "a.test")
    assert block is not None and block.tree is not None
    tree = block.tree
    every = [tree.root, *tree._every(), *tree.named.values()]
    for loc in every:
        assert loc.memo == {}
        for name in ("root", "proxy", "intercept", "cache", "limit_req", "next_upstream"):
            assert loc.inherited(name) is loc._inherited(name)
            assert loc.inherited(name) is loc._inherited(name)   # now from the memo
        assert set(loc.memo) == {"root", "proxy", "intercept", "cache", "limit_req", "next_upstream"}
    first = tree.find(r"~ \.png$")
    assert first is tree.find(r"~ \.png$") and first is not None and first.label == r"~ \.png$"
    assert r"~ \.png$" in tree._fits
    # several candidates: the matcher's choice is asked each time, never remembered
    picks = [tree.find("/exact", prefer=lambda: None), tree.find("/exact", prefer=lambda: every[2])]
    assert picks[0] is tree._fits["/exact"][0]
