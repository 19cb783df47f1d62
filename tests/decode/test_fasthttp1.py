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


def compiled_head(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """What http1.parse_head does with the extension (also under NGXSCOPE_PURE_PYTHON=1)."""
    out = _fasthttp1.parse_head(head)
    if isinstance(out, str):
        raise HeadError(out)
    return out


def compiled_response(prefix: bytes) -> http1.ParsedResponse:
    status, reason, version, headers, head_bytes, error = _fasthttp1.parse_response(prefix)
    return http1.ParsedResponse(status, reason, version, headers, head_bytes, head_bytes, error)


def same(head: bytes) -> None:
    ref = outcome(http1.parse_head_py, head)
    assert outcome(compiled_head, head) == ref, head
    assert outcome(http1.parse_head, head) == ref


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


def same_response(prefix: bytes) -> None:
    ref = http1.parse_response_py(prefix)
    assert compiled_response(prefix) == ref, prefix
    assert http1.parse_response(prefix) == ref
    # the tuple emit_h1 takes: the same fields, the body where the heads end
    assert ref.body_offset == ref.head_bytes
    assert http1.parse_response_fields(prefix) == (ref.status, ref.reason, ref.version, ref.headers,
                                                   ref.head_bytes, ref.error)


def test_parse_response_known() -> None:
    for resp in (S.CHUNKED_RESPONSE, S.NOT_MODIFIED, S.CONTINUE + S.ok("a"), S.CONTINUE + S.CONTINUE + S.CREATED,
                 S.BAD_REQUEST, S.HEAD_RESPONSE, b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
                 b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nxx", b"HTTP/1.1 200\n\nbody",
                 b"HTTP/1.1 1_00 Continue\r\n\r\nHTTP/1.1 +200 OK\r\n\r\n", b"HTTP/1.1 \xa0200\x85 OK\r\n\r\n",
                 b"HTTP/1.1 99999999999999999999999 X\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r", b"\r\n\r\n",
                 b"\n\n", b"ICY 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nA: b\n\r\n\r\n", S.RANDOM_BYTES, b""):
        same_response(resp)
    assert http1.parse_response(S.CONTINUE + S.ok("a")).status == 200


status_line = st.builds(lambda v, c, r: f"{v} {c}{r}", st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "ICY", ""]),
                        st.one_of(st.sampled_from(["100", "101", "103", "200", "204", "404", "1_00", " 200", "0200",
                                                   "abc", "", "99999999999999999999"]),
                                  st.text(st.characters(max_codepoint=255), max_size=4)),
                        st.sampled_from([" OK", "", " Continue", " ", " a b"]))


@settings(max_examples=1000)
@given(st.lists(st.tuples(status_line, st.lists(st.tuples(line, eol), max_size=4),
                          st.sampled_from(["\r\n\r\n", "\n\n", "\r\n\n", "\n\r\n", "\r\n", ""])),
                min_size=1, max_size=3),
       st.binary(max_size=40))
def test_generated_responses(heads: list[tuple[str, list[tuple[str, str]], str]], body: bytes) -> None:
    text = "".join(start + "".join(e + ln for ln, e in lines) + end for start, lines, end in heads)
    same_response(text.encode("latin-1") + body)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_garbage_responses(prefix: bytes) -> None:
    same_response(prefix)
    same_response(b"HTTP/1.1 200 OK\r\n" + prefix)


_FRAMING = st.sampled_from(["Content-Length: 3", "content-length: 0", "Content-Length: 03", "CONTENT-LENGTH:  5 ",
                            "Content-Length: x", "Content-Length: -1", "Content-Length: 99999999999999999999",
                            "Transfer-Encoding: chunked", "transfer-encoding: gzip, Chunked",
                            "Transfer-Encoding: gzip", "Host: a", "X: \xe9", "Bad Name: v", " folded"])
_START = st.sampled_from(["GET / HTTP/1.1", "POST /p?q=1 HTTP/1.0", "GET /x", "GET / FTP/1.0", "PURGE /a b HTTP/1.1",
                          "\r\nGET / HTTP/1.1", "GET  HTTP/1.1", "G\x00T / HTTP/1.1"])


def frame(data: bytes, cuts: list[int], pure: bool, midway: bool) -> list[tuple[object, ...]]:
    """The requests RequestStream frames from `data` fed in pieces, with the compiled head
    path or the reference's (parse_head swapped as tests/decode/test_compiled.py does)."""
    compiled_head_fn = http1.parse_head
    if pure:
        http1.parse_head = http1.parse_head_py  # type: ignore[assignment]
    try:
        rs = http1.RequestStream(body_limit=8)
        rs.allow_midway = midway   # a connection first seen right after attaching
        at = 0
        for cut in [*sorted(cuts), len(data)]:
            piece = data[at:max(at, cut)]
            at = max(at, cut)
            if piece:
                rs.feed(piece, len(piece), float(at), float(at))
        out = []
        while (req := rs.take()) is not None:
            out.append((req.method, req.target, req.version, req.headers, req.head_bytes, bytes(req.body),
                        req.body_size, req.complete, req.truncated, req.error, req.raw, req.start_ts, req.end_ts))
        cur = rs.current
        out.append(("current", cur.method if cur else None, rs.pending_raw(), rs.idle(), rs.uncertain))
        return out
    finally:
        http1.parse_head = compiled_head_fn  # type: ignore[assignment]


@settings(max_examples=400)
@given(st.lists(st.tuples(_START, st.lists(_FRAMING, max_size=4), st.binary(max_size=12)), min_size=1, max_size=4),
       st.lists(st.integers(0, 300), max_size=4), st.booleans())
def test_request_stream_compiled_head_path_frames_as_the_reference(
        requests: list[tuple[str, list[str], bytes]], cuts: list[int], midway: bool) -> None:
    """RequestStream's compiled common case (_fasthttp1.request_head: a whole good head in
    one call) frames what the reference frames: same requests, errors, bodies and leftovers,
    whatever the framing headers (valid, bad, chunked, duplicated) and however cut."""
    data = b"".join(f"{start}\r\n{''.join(h + chr(13) + chr(10) for h in hdrs)}\r\n".encode("latin-1") + body
                    for start, hdrs, body in requests)
    assert frame(data, cuts, True, midway) == frame(data, cuts, False, midway)
