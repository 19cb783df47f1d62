"""W3C traceparent parsing (fuzzed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ngxscope.decode.tracecontext import parse_traceparent, traceparent_of_head

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_valid_and_invalid() -> None:
    tp = parse_traceparent(TP)
    assert tp is not None and tp.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tp.parent_id == "00f067aa0ba902b7" and tp.flags == 1
    assert parse_traceparent(" " + TP + " ") == tp
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future") is not None
    for bad in ("", TP.upper(), TP + "-x", "ff" + TP[2:], "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", TP[:-1]):
        assert parse_traceparent(bad) is None, bad


def test_from_a_raw_head() -> None:
    head = f"GET / HTTP/1.1\r\nHost: x\r\nTraceParent: {TP}\r\n\r\n"
    assert traceparent_of_head(head) == TP
    assert traceparent_of_head("GET / HTTP/1.1\r\n\r\n") is None and traceparent_of_head(None) is None


@given(st.text(max_size=80))
def test_any_text(value: str) -> None:
    tp = parse_traceparent(value)
    assert tp is None or (len(tp.trace_id) == 32 and len(tp.parent_id) == 16)
