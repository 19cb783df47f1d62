"""TLS handshake records decoded with dpkt (decode/tlswire.py), from real OpenSSL handshakes
run in memory (ssl.MemoryBIO), and fuzzed: garbage never raises."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.decode.tlswire import cipher_name, parse_tls, version_name
from ngxscope.lab.config import self_signed_cert


@pytest.fixture(scope="module")
def server_ctx() -> ssl.SSLContext:
    cert, key = self_signed_cert()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "c.pem").write_bytes(cert)
        Path(tmp, "k.pem").write_bytes(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(Path(tmp, "c.pem"), Path(tmp, "k.pem"))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def _client_ctx(version: ssl.TLSVersion, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, sni: str | None,
              session: ssl.SSLSession | None = None) -> tuple[bytes, bytes, ssl.SSLObject]:
    """(client's first flight, server's first flight, the client) of a handshake in memory."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni, session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    flights: list[bytes] = []
    for _ in range(6):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        out_c, out_s = c_out.read(), s_out.read()
        if out_c:
            flights.append(out_c)
            s_in.write(out_c)
        if out_s:
            flights.append(out_s)
            c_in.write(out_s)
    # tickets (TLS 1.3) arrive after the handshake: let the client read them
    for _ in range(2):
        server.write(b"x")
        c_in.write(s_out.read())
        client.read(10)
    return flights[0], flights[1], client


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_hellos(server_ctx: ssl.SSLContext, version: ssl.TLSVersion) -> None:
    ctx = _client_ctx(version, ["h2", "http/1.1"])
    ch_bytes, sh_bytes, client = handshake(server_ctx, ctx, "shop.example.test")
    ch = parse_tls(ch_bytes).client_hello
    assert ch is not None
    assert ch.sni == "shop.example.test"
    assert ch.alpn == ["h2", "http/1.1"]
    assert version_name(version.value) in ch.versions
    assert client.cipher()[0] in ch.ciphers
    assert not ch.psk
    parsed = parse_tls(sh_bytes)
    sh = parsed.server_hello
    assert sh is not None and parsed.errors == 0
    assert sh.version == client.version()
    assert sh.cipher == client.cipher()[0]
    assert not sh.psk
    if version == ssl.TLSVersion.TLSv1_2:
        assert sh.alpn == client.selected_alpn_protocol() == "h2"
    else:
        assert sh.alpn is None  # in EncryptedExtensions


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumption(server_ctx: ssl.SSLContext, version: ssl.TLSVersion) -> None:
    ctx = _client_ctx(version)
    _ch, _sh, first = handshake(server_ctx, ctx, None)
    ch_bytes, sh_bytes, again = handshake(server_ctx, ctx, None, session=first.session)
    assert again.session_reused
    ch, sh = parse_tls(ch_bytes).client_hello, parse_tls(sh_bytes).server_hello
    assert ch is not None and sh is not None
    assert ch.sni is None
    if version == ssl.TLSVersion.TLSv1_3:
        assert ch.psk and sh.psk
    else:
        assert ch.ticket and ch.session_id and sh.session_id == ch.session_id


def test_alert_and_garbage() -> None:
    parsed = parse_tls(b"\x15\x03\x03\x00\x02\x02\x46")
    assert [(a.level, a.code, a.name) for a in parsed.alerts] == [(2, 70, "protocol_version")]
    assert parse_tls(b"GET / HTTP/1.1\r\n\r\n").errors == 1
    bad = parse_tls(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff")
    assert bad.client_hello is None and bad.errors == 1
    cut = parse_tls(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert cut.client_hello is None and cut.errors == 1


def test_names() -> None:
    assert version_name(0x0303) == "TLSv1.2" and version_name(0x0304) == "TLSv1.3"
    assert cipher_name(0xC02F) == "ECDHE-RSA-AES128-GCM-SHA256"
    assert cipher_name(0x1302) == "TLS_AES_256_GCM_SHA384"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_garbage_never_raises(data: bytes) -> None:
    parse_tls(data)
    parse_tls(b"\x16\x03\x01" + data)
    parse_tls(b"\x16\x03\x01" + len(data).to_bytes(2, "big") + data)


_HELLO: list[bytes] = []


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_hello_never_raises(server_ctx: ssl.SSLContext, data: st.DataObject) -> None:
    if not _HELLO:
        _HELLO.append(handshake(server_ctx, _client_ctx(ssl.TLSVersion.TLSv1_3, ["h2"]), "a.test")[0])
    hello = bytearray(_HELLO[0])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(hello) - 1))
        hello[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(hello)))
    parse_tls(bytes(hello[:cut]))
    parse_tls(bytes(hello))
