"""Redaction: default headers, user headers and parameters, in every export format."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from factories import make_exchange
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.exporters import FORMATS, export
from ngxscope.store.redact import (
    MASK,
    RedactPolicy,
    policy_from_env,
    redact_exchange,
    redact_head,
    redact_header,
)
from ngxscope.store.session import SessionWriter

SECRET = "s3cr3tTOKENvalue"
POLICY = RedactPolicy.make(headers=["X-Api-Key"], params=["token"])


def write_session(path: Path, exchanges: list[Exchange]) -> Path:
    with SessionWriter(path, {"pid": 1}) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    return path


def secret_exchanges() -> list[Exchange]:
    """The secret everywhere a header or parameter can carry it."""
    req = [("Host", "shop"), ("Authorization", f"Bearer {SECRET}"),
           ("Proxy-Authorization", f"Basic {SECRET}"), ("Cookie", f"session={SECRET}; theme=dark"),
           ("X-Api-Key", SECRET), ("Referer", f"https://shop/?token={SECRET}&page=2")]
    resp = [("Content-Type", "text/plain"), ("Set-Cookie", f"session={SECRET}; Path=/; HttpOnly"),
            ("Location", f"/next?token={SECRET}"), ("Content-Length", "2")]
    up = UpstreamAttempt(
        addr="127.0.0.1:8081", status=200,
        request_head=f"GET /a?token={SECRET} HTTP/1.0\r\nCookie: session={SECRET}\r\n"
                     f"X-Api-Key: {SECRET}\r\n\r\n",
        response_head=f"HTTP/1.1 200 OK\r\nSet-Cookie: id={SECRET}\r\n\r\n")
    return [
        make_exchange(target=f"/a?token={SECRET}&page=2", request_headers=req,
                      response_headers=resp, response_body=b"ok", upstream=[up]),
        make_exchange(method="POST", target="/login", request_body=f"user=a&token={SECRET}".encode(),
                      request_headers=[("Host", "shop"),
                                       ("Content-Type", "application/x-www-form-urlencoded"),
                                       ("Content-Length", str(len(f"user=a&token={SECRET}")))]),
        make_exchange(method="", target="", status=None, request_headers=[],
                      request_body=f"BROKEN\r\nCookie: a={SECRET}\r\n\r\n".encode(),
                      response_body=b"", error="not HTTP"),
    ]


def all_bytes(data: bytes) -> bytes:
    """The data plus every gzip/deflate stream found in it, decompressed."""
    out = [data]
    for start in range(len(data)):
        if data[start : start + 2] == b"\x1f\x8b":
            try:
                out.append(gzip.decompress(data[start:]))
            except (OSError, EOFError, zlib.error):
                pass
    return b"".join(out)


def test_values() -> None:
    p = RedactPolicy.make()
    assert redact_header("Authorization", "Bearer abc.def", p) == f"Bearer {MASK}"
    assert redact_header("authorization", "abc", p) == MASK
    assert redact_header("Cookie", "a=1; b=2", p) == f"a={MASK}; b={MASK}"
    assert redact_header("Set-Cookie", "sid=1; Path=/; Secure", p) == f"sid={MASK}; Path=/; Secure"
    assert redact_header("Accept", "text/html", p) == "text/html"
    assert redact_header("Cookie", "a=1", RedactPolicy.make(enabled=False)) == "a=1"
    head = "GET /x?token=1&b=2 HTTP/1.1\r\nAuthorization: Basic Zm9v\r\nHost: h\r\n\r\n"
    assert redact_head(head, POLICY) == (
        f"GET /x?token={MASK}&b=2 HTTP/1.1\r\nAuthorization: Basic {MASK}\r\nHost: h\r\n\r\n")


def test_redact_exchange_is_a_copy() -> None:
    ex = secret_exchanges()[0]
    before = ex.to_dict()
    red = redact_exchange(ex, POLICY)
    assert ex.to_dict() == before
    assert SECRET not in repr(red.to_dict())
    assert ("Cookie", f"session={MASK}; theme={MASK}") in red.request_headers
    assert red.target == f"/a?token={MASK}&page=2"
    assert redact_exchange(ex, RedactPolicy.make(enabled=False)) is ex


def test_env_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGXSCOPE_REDACT_HEADERS", "X-One, x-two")
    monkeypatch.setenv("NGXSCOPE_REDACT_PARAMS", "sig key")
    p = policy_from_env(["X-Three"], ["pw"])
    assert {"x-one", "x-two", "x-three", "cookie"} <= p.headers
    assert p.params == {"sig", "key", "pw"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_secret_never_in_any_export(fmt: str, tmp_path: Path) -> None:
    src = write_session(tmp_path / "s.ngxs", secret_exchanges())
    out = tmp_path / f"s.{fmt}"
    assert export(src, fmt, out, policy=POLICY) == 3
    data = all_bytes(out.read_bytes())
    assert SECRET.encode() not in data
    assert MASK.encode() in data
    # and --no-redact keeps it
    plain = tmp_path / f"plain.{fmt}"
    export(src, fmt, plain, redact=False)
    assert SECRET.encode() in all_bytes(plain.read_bytes())


def test_secret_never_in_a_gzip_body(tmp_path: Path) -> None:
    """A response compressed on the wire: its (decoded) body is not a header, so only the
    Set-Cookie is masked; the HAR's decoded text holds no secret from the headers."""
    gz = gzip.compress(b"hello")
    ex = make_exchange(response_body=gz, response_headers=[
        ("Content-Encoding", "gzip"), ("Set-Cookie", f"a={SECRET}"), ("Content-Length", str(len(gz)))])
    src = write_session(tmp_path / "s.ngxs", [ex])
    for fmt in FORMATS:
        out = tmp_path / f"g.{fmt}"
        export(src, fmt, out)
        assert SECRET.encode() not in all_bytes(out.read_bytes())


def test_nothing_to_mask_gives_the_same_exchange_without_a_copy() -> None:
    policy = RedactPolicy.make()
    ex = make_exchange(request_headers=[("Host", "a"), ("Accept", "*/*")], response_headers=[("Server", "nginx")],
                       upstream=[UpstreamAttempt(addr="127.0.0.1:8081", status=200,
                                                 request_head="GET / HTTP/1.0\r\nHost: a\r\n\r\n")])
    assert redact_exchange(ex, policy) is ex
    secret = make_exchange(request_headers=[("Host", "a"), ("Authorization", "Bearer abc")],
                           upstream=[UpstreamAttempt(addr="127.0.0.1:8081", status=200,
                                                     request_head="GET / HTTP/1.0\r\nCookie: s=1\r\n\r\n")])
    out = redact_exchange(secret, policy)
    assert out is not secret and "abc" not in str(out.request_headers) and "s=1" not in out.upstream[0].request_head
    assert secret.request_headers[1] == ("Authorization", "Bearer abc")  # the original is never changed


_NAMES = st.sampled_from(["Host", "Accept", "Cookie", "cookie", " Cookie ", "Set-Cookie", "AUTHORIZATION",
                          "Proxy-Authorization", "X-Api-Key", "x-api-key", "Referer", "Content-Type"])
_VALUES = st.sampled_from(["", "a", "session=1; theme=dark", "Bearer abc", "/p?token=1&x=2", "text/plain"])


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=6), st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
       st.sampled_from([RedactPolicy.make(), POLICY, RedactPolicy.make(headers=["X-Api-Key"])]))
def test_headers_masked_as_header_by_header(req: list[tuple[str, str]], resp: list[tuple[str, str]],
                                            policy: RedactPolicy) -> None:
    """The exchange's headers come out as redact_header gives them one by one (the fast look
    for a header to mask changes nothing), and a copy never shares a list with the original."""
    ex = make_exchange(request_headers=list(req), response_headers=list(resp))
    out = redact_exchange(ex, policy)
    assert out.request_headers == [(k, redact_header(k, v, policy)) for k, v in req]
    assert out.response_headers == [(k, redact_header(k, v, policy)) for k, v in resp]
    assert ex.request_headers == req and ex.response_headers == resp
    if out is not ex:
        assert out.request_headers is not ex.request_headers and out.response_headers is not ex.response_headers


def test_a_name_found_safe_under_one_policy_is_masked_under_another() -> None:
    """Header names found not masked are remembered per set of masked names (every exchange
    asks): X-Api-Key seen harmless by the default policy is still masked by one naming it,
    and a flood of distinct names (the client's to choose) changes no answer."""
    default, keyed = RedactPolicy.make(), RedactPolicy.make(headers=["X-Api-Key"])
    headers = [("Host", "a"), ("X-Api-Key", SECRET)]
    for _ in range(3):
        assert redact_exchange(make_exchange(request_headers=list(headers)), default).request_headers == headers
        out = redact_exchange(make_exchange(request_headers=list(headers)), keyed)
        assert out.request_headers == [("Host", "a"), ("X-Api-Key", MASK)]
    for i in range(5000):
        assert redact_header(f"X-{i}", "v", default) == "v"
        redact_exchange(make_exchange(response_headers=[(f"X-{i}", "v")]), default)
    out = redact_exchange(make_exchange(response_headers=[("X-1", "v"), ("Set-Cookie", "s=1; Path=/")]), default)
    assert out.response_headers[0] == ("X-1", "v") and "s=1" not in out.response_headers[1][1]
