"""Copy as curl / HTTPie / raw / requests: quoting, bodies, redaction, HTTP/2, upstream heads."""

from __future__ import annotations

import ast
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_exchange
from ngxscope.model import UpstreamAttempt
from ngxscope.store.copyas import (
    FORMATS,
    from_attempt,
    from_exchange,
    render,
    script,
    shell_quote,
    to_curl,
    to_raw,
    to_requests,
)
from ngxscope.store.redact import RedactPolicy, redact_exchange


def _echo(word: str) -> bytes:
    """What bash makes of one shell word."""
    return subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True,
                          check=True).stdout


@pytest.mark.parametrize("value", [
    "plain", "", "it's", "a b", "$(rm -rf /)", "`id`", "\"q\"", "back\\slash", "semi;colon",
    "new\nline", "cr\r\n", "\x1b[31mred", "tab\there", "Zoë 東京 ✓", "!bang", "*glob?",
])
def test_shell_quote_round_trips_through_bash(value: str) -> None:
    assert _echo(shell_quote(value.encode())) == value.encode()


def test_shell_quote_non_utf8_bytes_and_nul() -> None:
    raw = bytes(range(1, 256))
    word = shell_quote(raw)
    assert word.startswith("$'")
    assert _echo(word) == raw
    with pytest.raises(ValueError, match="NUL"):
        shell_quote(b"a\x00b")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40).filter(lambda b: b"\x00" not in b))
def test_shell_quote_any_bytes(raw: bytes) -> None:
    assert _echo(shell_quote(raw)) == raw


def test_latin1_decoded_header_goes_back_to_its_wire_bytes() -> None:
    wire = "Zoë".encode()  # the decoder reads heads as latin-1
    ex = make_exchange(request_headers=[("Host", "a"), ("X-Name", wire.decode("latin-1"))])
    cmd = to_curl(from_exchange(ex))
    assert "'X-Name: Zoë'" in cmd
    assert b"X-Name: Zo\xc3\xab\r\n" in to_raw(from_exchange(ex))


def test_curl_removes_the_headers_it_would_add_and_pins_the_address() -> None:
    ex = make_exchange(method="GET", target="/a?b=1", server="127.0.0.1:8080",
                       request_headers=[("Host", "shop.example.test")])
    cmd = to_curl(from_exchange(ex))
    assert cmd.startswith("curl --http1.1 --path-as-is -g ")
    assert "--connect-to ::127.0.0.1:8080" in cmd
    assert "-H User-Agent: -H Accept:" in cmd
    assert "-X" not in cmd and "--data" not in cmd
    assert cmd.endswith("'http://shop.example.test/a?b=1'")  # ? would glob unquoted


def test_empty_header_value_and_empty_post_body() -> None:
    ex = make_exchange(method="POST", target="/u", request_body=b"", request_body_size=0,
                       request_headers=[("Host", "h"), ("X-Empty", ""), ("Content-Length", "0")])
    cmd = to_curl(from_exchange(ex))
    assert "-H 'X-Empty;'" in cmd and "-X POST" in cmd and "--data" not in cmd
    assert "-H 'Content-Length: 0'" in cmd


def test_binary_body_uses_base64_here_document() -> None:
    body = b"\x00\x01\xff\r\n"
    ex = make_exchange(method="PUT", request_body=body, request_body_size=len(body),
                       request_headers=[("Host", "h"), ("Content-Length", "5")])
    cmd = to_curl(from_exchange(ex))
    first, doc = cmd.split("\n", 1)
    assert first.startswith("base64 -d <<'B64' | curl ") and "--data-binary @-" in first
    assert doc == "AAH/DQo=\nB64"
    # the shell gives curl exactly the body
    decoded = subprocess.run(["bash"], input=(cmd.replace("| curl", "| cat #", 1)).encode(),
                             capture_output=True, check=True).stdout
    assert decoded == body


def test_text_body_inline_and_masked_secret_stays_masked() -> None:
    ex = make_exchange(method="POST", request_body=b'{"a": "it\'s"}', request_body_size=13,
                       request_headers=[("Host", "h"), ("Authorization", "Bearer abc"),
                                        ("Content-Type", "application/json")])
    red = redact_exchange(ex, RedactPolicy.make())
    spec = from_exchange(red)
    assert spec.masked == ["Authorization"]
    cmd = to_curl(spec)
    assert cmd.startswith("# values masked when recorded (Authorization)")
    assert "'Authorization: Bearer <redacted>'" in cmd and "abc" not in cmd
    assert "--data-binary '{\"a\": \"it'\\''s\"}'" in cmd
    assert from_exchange(ex).masked == []


def test_http2_pseudo_headers_become_url_and_flags() -> None:
    ex = make_exchange(version="HTTP/2.0", tls=True, method="GET", target="/x",
                       request_headers=[(":method", "GET"), (":scheme", "https"),
                                        (":authority", "h2.example:8443"), (":path", "/x"),
                                        ("accept", "*/*")])
    spec = from_exchange(ex)
    assert all(not k.startswith(":") for k, _ in spec.headers)
    cmd = to_curl(spec)
    assert "--http2 " in cmd and "https://h2.example:8443/x" in cmd and ":method" not in cmd
    assert "-H 'Host:'" not in cmd
    assert to_raw(spec).startswith(b"GET /x HTTP/1.1\r\nHost: h2.example:8443\r\naccept: */*\r\n")


def test_odd_target_goes_as_request_target() -> None:
    # heads are decoded latin-1: this is the UTF-8 "/a b/ü#frag" as the decoder stores it
    ex = make_exchange(target="/a b/ü#frag".encode().decode("latin-1"), request_headers=[("Host", "h")])
    cmd = to_curl(from_exchange(ex))
    assert "--request-target '/a b/ü#frag'" in cmd and cmd.endswith(" http://h/")


def test_upstream_attempt_head_as_sent() -> None:
    a = UpstreamAttempt(addr="10.0.0.2:8081", status=200,
                        request_head="GET /api/x HTTP/1.1\r\nHost: app\r\nX-Real-IP: 1.2.3.4\r\n\r\n")
    ex = make_exchange(upstream=[a])
    spec = from_attempt(ex, a)
    assert (spec.method, spec.target, spec.connect) == ("GET", "/api/x", "10.0.0.2:8081")
    assert "--connect-to ::10.0.0.2:8081" in to_curl(spec)
    with pytest.raises(ValueError, match="no request head"):
        from_attempt(ex, UpstreamAttempt(addr="10.0.0.3:1"))


def test_requests_script_is_valid_python_and_drops_library_defaults() -> None:
    body = b"\x00binary"
    ex = make_exchange(method="POST", request_body=body, request_body_size=len(body),
                       request_headers=[("Host", "h"), ("Cookie", "a=1"), ("Cookie", "b=2")])
    code = to_requests(from_exchange(ex))
    ast.parse(code)
    assert "'Cookie': 'a=1; b=2'" in code and "'User-Agent': None" in code
    assert "base64.b64decode(" in code


def test_every_format_and_scripts_of_several_rows() -> None:
    exs = [make_exchange(), make_exchange(method="POST", request_body=b"x=1", request_body_size=3)]
    specs = [from_exchange(e) for e in exs]
    for fmt in FORMATS:
        assert render(specs[0], fmt)
        out = script(specs, fmt)
        assert all(s.label in out for s in specs) or fmt == "raw"
    sh = script(specs, "curl")
    assert sh.startswith("#!/bin/bash") and sh.count("\ncurl ") == 2
    subprocess.run(["bash", "-n"], input=sh.encode(), check=True)
    ast.parse(script(specs, "requests"))
    with pytest.raises(ValueError, match="unknown format"):
        render(specs[0], "wget")


def test_chunked_request_is_dechunked_for_the_client() -> None:
    framed = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    ex = make_exchange(method="POST", request_body=framed, request_body_size=len(framed),
                       request_headers=[("Host", "h"), ("Transfer-Encoding", "chunked")])
    spec = from_exchange(ex)
    assert spec.body == b"abcde" and spec.chunked
    assert "--data-binary abcde" in to_curl(spec)
    assert to_raw(spec).endswith(b"\r\n\r\n5\r\nabcde\r\n0\r\n\r\n")
