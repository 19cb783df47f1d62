"""Header and body search terms of the filter language (store/bodysearch.py via filterexpr)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_exchange
from ngxscope.model import Exchange
from ngxscope.store.bodysearch import CACHE, DecodedCache, decoded_body
from ngxscope.store.filterexpr import FilterError, compile_filter

JSON = b'{"error": "Error Code 42", "who": "caf\\u00e9", "id": "r-17"}'


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def _ex(body: bytes = JSON, enc: str = "", chunked: bool = False, **kw: object) -> Exchange:
    data = gzip.compress(body) if enc == "gzip" else zlib.compress(body) if enc == "deflate" else body
    if chunked:
        data = _chunked(data)
    headers = [("Content-Type", "application/json"), ("X-Request-Id", "abc-123")]
    if enc:
        headers.append(("Content-Encoding", enc))
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    return make_exchange(response_body=data, response_headers=headers, **kw)


@pytest.mark.parametrize("enc", ["", "gzip", "deflate"])
@pytest.mark.parametrize("chunked", [False, True])
def test_body_decoded_before_search(enc: str, chunked: bool) -> None:
    ex = _ex(enc=enc, chunked=chunked)
    assert compile_filter('body~"Error Code"')(ex)
    assert compile_filter('resp.body~"Error Code 4[0-9]"')(ex)
    assert not compile_filter('req.body~"Error Code"')(ex)
    assert compile_filter("body~café")(ex), "JSON escapes resolved"
    assert not compile_filter('body!~"Error Code"')(ex)


@pytest.mark.parametrize(("text", "expected"), [
    ('body~"error code"', False),      # ~ is case-sensitive
    ('body~*"error code"', True),      # ~* is not
    ('body!~*"ERROR CODE"', False),
    ("body~*CAFÉ", True),              # caseless on non-ASCII text too
    ("header.x-request-id=abc-123", True),
    ("header.X-Request-Id=abc-123", True),  # header names are case-insensitive
    ("header.x-request-id=ABC-123", False),
    ("header.x-request-id~*^ABC", True),
    ("resp.header.content-type~json", True),
    ("req.header.content-type~json", False),
    ("req.header.accept=application/json", True),
    ("header.x-request-id", True),     # presence
    ("req.header.x-request-id", False),
    ("header.x-missing", False),
    ("header.x-missing!=a", True),     # no such header: != holds
    ("header.x-request-id!=abc-123", False),
    ("not header.x-missing and body~r-17", True),
    ("path~*^/API", True),             # ~* on the existing text fields as well
    ("path~^/API", False),
])
def test_terms(text: str, expected: bool) -> None:
    assert compile_filter(text)(_ex(enc="gzip", chunked=True)) is expected


def test_request_body_and_unparsed() -> None:
    ex = make_exchange(method="POST", request_body=b"q=needle&x=1", request_body_size=12)
    assert compile_filter("req.body~needle")(ex) and compile_filter("body~needle")(ex)
    assert not compile_filter("resp.body~needle")(ex)
    assert compile_filter('body=""')(make_exchange(response_body=b""))


@pytest.mark.parametrize(("text", "column", "fragment"), [
    ("body>3", 1, "cannot compare text"),
    ("header.x~(", 10, "bad regular expression"),
    ("status~*5", 1, "needs a text field"),
    ("resp.nothing=1", 1, "unknown field"),
    ("body~", 6, "missing value"),
])
def test_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert info.value.column == column and fragment in info.value.message


def test_cache_decodes_once_and_is_bounded() -> None:
    cache = DecodedCache(max_bytes=200)
    exs = [_ex(enc="gzip") for _ in range(5)]
    for ex in exs:
        assert cache.get(ex, False) == decoded_body(ex.response_body, ex.response_headers)
    assert cache.misses == 5 and cache._size <= 200
    cache.get(exs[-1], False)
    assert cache.misses == 5, "the newest is still cached"
    cache.get(exs[0], False)
    assert cache.misses == 6, "the oldest was dropped"
    plain = make_exchange()
    assert cache.get(plain, False) is plain.response_body, "no copy of a raw body"
    small = DecodedCache(max_entries=3)
    for ex in exs:
        small.get(ex, False)
    assert len(small._data[False]) <= 3
    CACHE.clear()


def test_zip_bomb_stops() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    ex = make_exchange(response_body=bomb, response_headers=[("Content-Encoding", "gzip")])
    assert len(decoded_body(ex.response_body, ex.response_headers)) <= 8 * 1024 * 1024
    assert not compile_filter("body~x")(ex)


WORDS = st.sampled_from(["header.", "req.", "resp.", "body", "x-id", "content-type", "~", "~*",
                         "!~*", "!", "=", "!=", "\"", "'", "(", ")", " ", "and", "or", "not",
                         "a", "*", "[", "\\", ".", "-", "json", "é"])


@settings(max_examples=600, deadline=None)
@given(st.lists(WORDS, max_size=20).map("".join))
def test_fuzz_search_grammar_only_filter_errors(text: str) -> None:
    try:
        pred = compile_filter(text)
    except FilterError as exc:
        assert exc.column >= 0 and exc.message
        return
    assert isinstance(pred(_ex(enc="gzip", chunked=True)), bool)
    assert isinstance(pred(make_exchange()), bool)
