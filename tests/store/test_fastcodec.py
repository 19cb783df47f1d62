"""The compiled session-line encoder (store._fastcodec) writes what the Python path
(`codec.encode_exchange_py`: orjson, then json for what orjson refuses) writes, byte for
byte: ordinary exchanges, and any field value hypothesis makes (control characters, quotes,
non-ASCII and lone surrogates, ints beyond 64 bits, every kind of float, bodies, nested
upstream attempts and wire frames); what it does not write itself it hands back (None) so the
Python path writes it."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import make_exchange
from ngxscope.capture import compiled
from ngxscope.model import Exchange, UpstreamAttempt, WireFrame
from ngxscope.store import codec

fast = pytest.importorskip("ngxscope.store._fastcodec", reason="compiled extensions not built")
codec.prepare_fastcodec(fast)   # as codec does at import unless NGXSCOPE_PURE_PYTHON=1


def both(ex: Exchange) -> tuple[bytes | None, bytes]:
    """(the compiled encoder's line or None, the Python path's line)."""
    return fast.exchange_line(ex, round(ex.duration_ms, 3)), codec.encode_exchange_py(ex)


def test_the_compiled_encoder_is_the_one_used() -> None:
    assert (codec._fast_line is fast.exchange_line) == compiled.wanted()


def test_ordinary_exchanges_are_written_by_the_compiled_encoder_as_python_writes_them() -> None:
    ex = make_exchange(request_body=b"a=1&b=\x00\xff", response_body=b"x" * 1001, error='say "no"\n\t\\',
                       upstream=[UpstreamAttempt("10.0.0.1:80", status=502, connect_ms=0.125, start=1.5e9,
                                                 response_head="HTTP/1.1 502 Bad\r\n\r\n")],
                       wire_packets=[WireFrame(1.5e9 + 0.25, b"\x45\x00\x01"), WireFrame(2.0, b"")],
                       request_headers=[("Host", "h"), ("X-Ctl", "\x01\x1f\x7f")], response_headers=[("A", "")])
    line = fast.exchange_line(ex, round(ex.duration_ms, 3))
    assert line is not None
    assert line == codec.encode_exchange_py(ex) == codec.encode_exchange(ex)
    assert codec.parse_record(line.decode()) == ex


def test_what_it_does_not_write_goes_the_python_way() -> None:
    for change in ({"error": "caf\u00e9"}, {"error": "\udc80"}, {"request_bytes": 1 << 64},
                   {"nginx_ms": math.inf}, {"nginx_ms": math.nan}, {"note": type("S", (str,), {})("x")}):
        ex = make_exchange(**change)
        assert fast.exchange_line(ex, 1.0) is None, change
        assert codec.encode_exchange(ex) == codec.encode_exchange_py(ex)
    assert fast.exchange_line(make_exchange(), math.inf) is None
    assert fast.exchange_line(object(), 1.0) is None


def test_register_refuses_what_is_not_a_slot() -> None:
    with pytest.raises(TypeError):
        fast.register(Exchange, ("id", "nope"))
    with pytest.raises(TypeError):
        fast.register(Exchange, ("id", 3))


def exchanges(wild: bool) -> st.SearchStrategy[Exchange]:
    """Exchanges with any values (wild), or with only what the compiled encoder writes itself
    (ASCII text, 64-bit ints, finite floats)."""
    ascii_texts = st.text(st.characters(max_codepoint=127), max_size=12)
    text = st.one_of(ascii_texts, st.text(max_size=6), st.just("\udc80")) if wild else ascii_texts
    floats = st.floats(allow_nan=wild, allow_infinity=wild)
    ints = st.integers(-(1 << 70), 1 << 70) if wild else st.integers(-(1 << 63), (1 << 63) - 1)
    headers = st.lists(st.tuples(ascii_texts, text), max_size=4)
    attempts = st.builds(UpstreamAttempt, addr=text, status=st.none() | st.integers(100, 599),
                         connect_ms=st.none() | floats, duration_ms=st.none() | floats,
                         request_bytes=ints, start=st.none() | floats, response_head=st.none() | text)
    frames = st.builds(WireFrame, ts=floats, frame=st.binary(max_size=40))

    @st.composite
    def build(draw: st.DrawFn) -> Exchange:
        start = draw(st.floats(0, 4e9))
        body = draw(st.binary(max_size=64))
        ex = make_exchange(start=start, method=draw(ascii_texts), target=draw(text),
                           status=draw(st.none() | ints), error=draw(st.none() | text),
                           request_headers=draw(headers), response_headers=draw(headers),
                           request_body=body, response_body=body[::-1],
                           upstream=draw(st.lists(attempts, max_size=2)), wire_packets=draw(st.lists(frames, max_size=2)),
                           nginx_ms=draw(st.none() | floats), nginx_end=draw(st.none() | floats),
                           response_bytes=draw(ints), truncated=draw(st.booleans()))
        ex.end = start + draw(st.floats(0, 1e7))
        return ex

    return build()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchanges(wild=True))
def test_any_exchange_is_written_the_same_either_way(ex: Exchange) -> None:
    compiled_line, python_line = both(ex)
    if compiled_line is not None:
        assert compiled_line == python_line
    assert codec.encode_exchange(ex) == python_line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchanges(wild=False))
def test_plain_values_are_written_by_the_compiled_encoder(ex: Exchange) -> None:
    compiled_line, python_line = both(ex)
    assert compiled_line == python_line


def test_every_field_is_written() -> None:
    ex = make_exchange()
    line = fast.exchange_line(ex, 0.5)
    assert line is not None
    keys = list(json.loads(line))
    assert keys == ["t", *(f.name for f in dataclasses.fields(Exchange)), "duration_ms"]
