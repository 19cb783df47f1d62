"""The filter language's lexer: tokens, their columns, quoting, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.store.filterexpr import compile_filter
from ngxscope.store.filterlex import FilterError, lex, quote_value

from .test_filterexpr import make


def test_tokens_and_columns() -> None:
    toks = lex('status>=500 && !(tls or "a b") header.x-id path~^/api')
    assert [(t.kind, t.col) for t in toks] == [
        ("cond", 1), ("and", 13), ("not", 16), ("(", 17), ("flag", 18), ("or", 22), ("string", 25),
        (")", 30), ("has", 32), ("cond", 44), ("eof", 54)]
    status, path = toks[0], toks[-2]
    assert (status.field, status.op, status.value, status.value_col) == ("status", ">=", "500", 9)
    assert (path.field, path.op, path.value) == ("path", "~", "^/api")
    assert toks[6].text == "a b"


def test_value_keeps_balanced_parentheses() -> None:
    toks = lex("(path~^/(a|b)$)")
    assert [t.kind for t in toks] == ["(", "cond", ")", "eof"]
    assert toks[1].value == "^/(a|b)$"


@pytest.mark.parametrize(("text", "column", "fragment"), [
    ("stauts=200", 1, "unknown field 'stauts'"),
    ("  req.heder.x=1", 3, "unknown field 'req.heder.x'"),
    ('host="open', 6, "unterminated string"),
    ("status= ", 9, "missing value"),
])
def test_errors_have_columns(text: str, column: int, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        lex(text)
    assert info.value.column == column and fragment in info.value.message


@pytest.mark.parametrize("value", ["a b", 'say "hi"', "and", "x(y", "back\\slash", "", "plain"])
def test_quote_value_round_trips(value: str) -> None:
    toks = lex(f"host={quote_value(value)}")
    if value:
        assert [t.kind for t in toks] == ["cond", "eof"] and toks[0].value == value
        assert compile_filter(f"host={quote_value(value)}")(make(host=value))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_lexer_only_filter_errors(text: str) -> None:
    try:
        toks = lex(text)
    except FilterError:
        return
    assert toks[-1].kind == "eof" and all(1 <= t.col <= len(text) + 1 for t in toks)
