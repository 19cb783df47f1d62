"""The filter language: what matches, what errors (with columns), and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.filterexpr import FilterError, compile_filter


def make(**kw: object) -> Exchange:
    base: dict[str, object] = dict(
        id=1, start=100.0, end=100.25, pid=1234, client="127.0.0.1:5555", server="10.0.0.1:443",
        tls=True, conn_id="1234:7:1", method="GET", target="/api/v1/items?page=2",
        version="HTTP/1.1", host="example.com", status=404, response_bytes=2048,
        request_bytes=300,
        upstream=[UpstreamAttempt("10.0.0.2:8080", status=502),
                  UpstreamAttempt("10.0.0.3:8080", status=404)],
    )
    base.update(kw)
    return Exchange(**base)  # type: ignore[arg-type]


E = make()
PLAIN = make(tls=False, status=200, method="POST", target="/login", host="shop.test",
             upstream=[], error="client closed", truncated=True, end=100.0001)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("   ", True),
        ("status>=500", False),
        ("status>=400", True),
        ("status=404", True),
        ("status==404", True),
        ("status!=404", False),
        ("status=4xx", True),
        ("status=4XX", True),
        ("status=5xx", False),
        ("status!=5xx", True),
        ("status=none", False),
        ("path~^/api", True),
        ("path~^/api/v2", False),
        ("path!~\\.png$", True),
        ("path=/api/v1/items", True),
        ("target~page=2", True),
        ("method=get", True),
        ("method=POST", False),
        ("duration>200ms", True),
        ("duration>0.3s", False),
        ("duration<300000us", True),
        ("duration>=250", True),
        ("upstream=10.0.0.2:8080", True),
        ("upstream=10.0.0.9:8080", False),
        ("upstream!=10.0.0.9:8080", True),
        ("upstream~:8080$", True),
        ("upstream_status=502", True),
        ("upstream_status=5xx", True),
        ("host=EXAMPLE.com", True),
        ("host~example", True),
        ("worker=1234", True),
        ("pid=99", False),
        ("client~127.0.0.1", True),
        ("server=10.0.0.1:443", True),
        ("conn=1234:7:1", True),
        ("size>1k", True),
        ("size>=2k", True),
        ("size>2k", False),
        ("reqsize<1KiB", True),
        ("tls", True),
        ("not tls", False),
        ("!tls", False),
        ("error", False),
        ("truncated", False),
        ("upstream", True),
        ("sendfile", False),
        ("summary", False),
        ("status=404 and tls", True),
        ("status=404 && !tls", False),
        ("status=500 or tls", True),
        ("status=500 || method=POST", False),
        ("not (status=500 or method=POST)", True),
        ("(status=404)", True),
        ("status=404 tls", True),
        ("items", True),
        ("EXAMPLE.COM/api", True),
        ('"page=2"', True),
        ("'v1/items?'", True),
        ("nothing-like-this", False),
        ("path~^/(api|web)/", True),
        ("(path~^/(api|web)/)", True),
        ("status=404 and (path~x or host=example.com)", True),
        ("host = example.com", True),
        ('path="/api/v1/items"', True),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    assert compile_filter(text)(E) is expected


def test_other_exchange() -> None:
    assert compile_filter("error")(PLAIN)
    assert compile_filter("error~closed")(PLAIN)
    assert compile_filter("truncated and not upstream")(PLAIN)
    assert compile_filter("duration<1ms")(PLAIN)
    assert not compile_filter("upstream_status=5xx")(PLAIN)
    assert compile_filter("upstream_status!=5xx")(PLAIN)
    assert compile_filter("status=none")(make(status=None))
    assert compile_filter("summary and not error")(make(summary_only=True))
    assert not compile_filter("status>=100")(make(status=None))
    assert compile_filter("status!=200")(make(status=None))


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("status>=", 9, "missing value"),
        ("bogus=1", 1, "unknown field"),
        ("status>=abc", 9, "bad status"),
        ("duration>5ms)", 13, "unexpected ')'"),
        ("duration>fast", 10, "bad duration"),
        ("path~(", 6, "regular expression"),
        ("(status=404", 12, "missing ')'"),
        ("status=404)", 11, "unexpected ')'"),
        ("status=404 and", 15, "ends too early"),
        ("or tls", 1, "unexpected 'or'"),
        ('"open', 1, "unterminated"),
        ("path>5", 1, "needs a number field"),
        ("status~5", 1, "needs a text field"),
        ("status>5xx", 1, "status class"),
        ("size>huge", 6, "bad size"),
        ("not", 4, "ends too early"),
        ("()", 2, "unexpected ')'"),
    ],
)
def test_errors_have_message_and_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert fragment in info.value.message
    assert info.value.column == column, info.value
    assert f"column {column}" in str(info.value)


def test_nesting_limit() -> None:
    with pytest.raises(FilterError, match="nested too deeply"):
        compile_filter("(" * 500 + "tls" + ")" * 500)
    with pytest.raises(FilterError, match="nested too deeply"):
        compile_filter("not " * 500 + "tls")
    assert compile_filter("(" * 20 + "tls" + ")" * 20)(E)


ALPHABET = st.sampled_from([*list("()!&|~=<>\"' \\-.:/*^$0123456789"), "status", "path", "duration", "ms", "and", "or", "not", "tls", "5xx", "upstream", "host", "error", "x", "[", "]", "?", "+", "{", "}", "s", "us", "k"])


@settings(max_examples=600, deadline=None)
@given(st.lists(ALPHABET, max_size=25).map("".join))
def test_fuzz_tokens_only_filter_errors(text: str) -> None:
    try:
        pred = compile_filter(text)
    except FilterError:
        return
    assert isinstance(pred(E), bool)
    assert isinstance(pred(PLAIN), bool)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_any_text_only_filter_errors(text: str) -> None:
    try:
        pred = compile_filter(text)
    except FilterError:
        return
    assert isinstance(pred(E), bool)
