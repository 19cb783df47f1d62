"""Route templates: the documented heuristic, user templates, the bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.store.routes import OTHER, RouteError, RouteTemplater, load_route_file


@pytest.mark.parametrize(("path", "want"), [
    ("/users/42", "/users/{id}"),
    ("/users/42?x=1", "/users/{id}"),
    ("/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items", "/orders/{uuid}/items"),
    ("/blobs/5d41402abc4b2a76b9719d911017c592", "/blobs/{hex}"),
    ("/s/abcDEF123_-xyzQWE987zz", "/s/{token}"),
    ("/api/v1/items", "/api/v1/items"),  # "v1" and words stay
    ("/deadbeef", "/deadbeef"),  # hex letters only: a word
    ("/", "/"),
    ("/a//b/", "/a//b/"),
])
def test_heuristic(path: str, want: str) -> None:
    assert RouteTemplater().template(path) == want


def test_user_templates_win_in_order() -> None:
    r = RouteTemplater(["/api/v1/users/{name}/repos", "/api/v1/users/{id}"])
    assert r.template("/api/v1/users/alice/repos") == "/api/v1/users/{name}/repos"
    assert r.template("/api/v1/users/alice") == "/api/v1/users/{id}"
    assert r.template("/api/v1/users/alice/x") == "/api/v1/users/alice/x"
    with pytest.raises(RouteError):
        RouteTemplater(["api/x"])
    with pytest.raises(RouteError):
        RouteTemplater(["/a/{b"])


def test_slugs_collapse_past_the_fanout() -> None:
    r = RouteTemplater(fanout=3)
    got = [r.template(f"/product/item-{c}") for c in "abcde"]
    assert got == ["/product/item-a", "/product/item-b", "/product/item-c", "/product/{slug}", "/product/{slug}"]


def test_never_more_templates_than_the_limit() -> None:
    r = RouteTemplater(limit=5, fanout=1000)
    got = {r.template(f"/p{i}") for i in range(50)}
    assert r.templates == 5 and OTHER in got and len(got) == 6


def test_routes_file(tmp_path: Path) -> None:
    f = tmp_path / "routes"
    f.write_text("# mine\n/api/v1/users/{id}\n\n/x/{y}/z  # trailing\n")
    assert load_route_file(f) == ["/api/v1/users/{id}", "/x/{y}/z"]
    assert load_route_file(tmp_path / "none") == []
    f.write_text("/ok\nbad\n")
    with pytest.raises(RouteError, match=":2:"):
        load_route_file(f)


@given(st.lists(st.text(max_size=30), max_size=60))
@settings(max_examples=200, deadline=None)
def test_any_paths_stay_bounded(paths: list[str]) -> None:
    r = RouteTemplater(limit=10, fanout=4)
    for p in paths:
        t = r.template(p)
        assert t == OTHER or t.startswith("/")
    assert r.templates <= 10


def test_route_rows_over_a_window() -> None:
    from factories import make_exchange
    from ngxscope.store.filterexpr import compile_filter
    from ngxscope.store.routestats import route_regex, route_rows

    exs = []
    for i in range(40):
        e = make_exchange(target=f"/users/{i}?x=1" if i % 4 else "/health", status=503 if i % 8 == 1 else 200,
                          start=1000.0 + i * 0.25)
        e.end = e.start + 0.01 * (i + 1)
        exs.append(e)
    old = make_exchange(target="/users/1", start=500.0)
    old.end = 500.1
    rows = route_rows([*exs, old], RouteTemplater(), end=1010.5, window_s=11.0, buckets=11)
    assert [(r.template, r.requests) for r in rows] == [("/users/{id}", 30), ("/health", 10)]
    users = rows[0]
    assert users.errors == 5 and users.error_rate == pytest.approx(5 / 30)
    assert users.rate == pytest.approx(30 / 11) and sum(users.spark) == 30
    assert users.p50 is not None and users.p99 is not None and users.p50 <= users.p95 <= users.p99  # type: ignore[operator]
    assert users.upstream_share == (1.0 if exs[1].upstream else 0.0)
    rx = route_regex("/users/{id}")
    assert rx is not None
    pred = compile_filter(f"path~'{rx}'")
    assert pred(exs[1]) and not pred(exs[0])
    assert route_regex("{other}") is None
