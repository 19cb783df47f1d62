"""The compiled HTTP/1 head parser (decode._fasthttp1) gives what the pure-Python reference
(decode.http1.parse_head_py) gives: the same start-line parts and headers, or the same
HeadError message, for generated, real and garbage heads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.capture import compiled
from ngxscope.decode import _fasthttp1, http1
from ngxscope.decode.http1 import HeadError

from . import streams as S


def outcome(parse: object, head: bytes) -> object:
    try:
        return parse(head)  # type: ignore[operator]
    except HeadError as exc:
        return ("HeadError", str(exc))


def same(head: bytes) -> None:
    ref = outcome(http1.parse_head_py, head)
    assert outcome(http1._parse_head_compiled, head) == ref, head
    raw = _fasthttp1.parse_head(head)
    assert raw == (ref[1] if isinstance(ref, tuple) and ref[0] == "HeadError" else ref)


def test_the_compiled_parser_is_built_and_used() -> None:
    if compiled.wanted():
        assert http1._fast is _fasthttp1 and http1.parse_head is http1._parse_head_compiled
    else:
        assert http1._fast is None and http1.parse_head is http1.parse_head_py


def test_known_heads() -> None:
    heads = [r.wire.split(b"\r\n\r\n")[0] for r in (S.GET_INDEX, S.GET_ITEMS, S.POST_UPLOAD, S.POST_CHUNKED,
                                                    S.PUT_CHUNKED_TRAILERS, S.GET_ABSOLUTE, S.OPTIONS_STAR)]
    heads += [S.GET_FOLDED.wire.rstrip(b"\r\n"), S.GET_BARE_LF.wire.rstrip(b"\n")]
    heads += [s.split(b"\r\n\r\n")[0] for s in (S.CHUNKED_RESPONSE, S.NOT_MODIFIED, S.BAD_REQUEST, S.CONTINUE)]
    heads += [b"", b" ", b"GET", b"GET /", b"GET  / HTTP/1.1", b"HTTP/1.1 200", b"\r\n", b"a b\r\r\r",
              b"GET / HTTP/1.1\r\n folded-first", b"GET / HTTP/1.1\r\nX: 1\r\n\t more \r\n  and\xa0more\x85",
              b"GET / HTTP/1.1\r\nBad Name: v", b"GET / HTTP/1.1\r\n: empty", b"GET / HTTP/1.1\r\nnocolon",
              b"GET / HTTP/1.1\r\nX-\x7f: v", b"GET / HTTP/1.1\r\nX-\xe9: \xe9t\xe9 \x1c", b"GET / HTTP/1.1\n\nX: y",
              b"GET / HTTP/1.1\r\nA:\r\nB:  \t", S.BINARY, S.TLS_CLIENT_HELLO, S.RANDOM_BYTES,
              b"GET /" + b"x" * 200 + b"\x00\x01'\"\\ HTTP/1.1\r\n" + b"Y" * 100 + b"\r\n"]
    for head in heads:
        same(head)
    same(bytearray(b"GET / HTTP/1.1\r\nHost: a"))


# header-ish lines: names, separators, values with every kind of whitespace and byte
name = st.one_of(st.sampled_from(["Host", "Content-Length", "X-A", "x_y", "A b", "", "\x7fX", "Ünï"]),
                 st.text(st.characters(max_codepoint=255), max_size=12))
value = st.text(st.characters(max_codepoint=255), max_size=30)
line = st.one_of(
    st.builds(lambda n, sep, v: n + sep + v, name, st.sampled_from([":", ": ", ":\t", " : ", ""]), value),
    st.builds(lambda ws, v: ws + v, st.sampled_from([" ", "\t", "  "]), value),  # folding
    st.just(""), value)
eol = st.sampled_from(["\r\n", "\n", "\r\r\n", "\r"])


@settings(max_examples=1500)
@given(st.text(st.characters(max_codepoint=255), max_size=60), st.lists(st.tuples(line, eol), max_size=8))
def test_generated_heads(start: str, lines: list[tuple[str, str]]) -> None:
    head = start + "".join(eol + ln for ln, eol in lines)
    same(head.encode("latin-1"))


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_garbage(head: bytes) -> None:
    same(head)


def test_parse_response_is_the_same_on_both() -> None:
    for resp in (S.CHUNKED_RESPONSE, S.NOT_MODIFIED, S.CONTINUE + S.ok("a"), S.BAD_REQUEST, b"HTTP/1.1 abc OK\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", S.RANDOM_BYTES, b""):
        ref_head = http1.parse_head
        try:
            http1.parse_head = http1.parse_head_py  # type: ignore[assignment]
            ref = http1.parse_response(resp)
        finally:
            http1.parse_head = ref_head  # type: ignore[assignment]
        assert http1.parse_response(resp) == ref
