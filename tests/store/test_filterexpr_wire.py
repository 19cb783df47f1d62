"""Filter terms on the connection beneath the request (socket filter fields)."""

from __future__ import annotations

import pytest

from ngxscope.model import Exchange
from ngxscope.store.filterexpr import FilterError, compile_filter


def _ex(**kw: object) -> Exchange:
    return Exchange(id=1, start=0.0, end=0.0, pid=1, client="127.0.0.1:1", server="127.0.0.1:443",
                    tls=True, **kw)  # type: ignore[arg-type]


OLD = _ex(tls_version="TLSv1.1", tls_handshake_ms=60.0, sni="shop.test", tls_resumed=True,
          reset_by="client", tls_cipher="ECDHE-RSA-AES128-SHA", alpn="http/1.1", retransmits=2)
NEW = _ex(tls_version="TLSv1.3", tls_handshake_ms=1.5, sni="api.test", tls_resumed=False)
FAILED = _ex(conn_outcome="tls-failed", error="TLS handshake failed: server alert: protocol_version")
PLAIN = _ex()


@pytest.mark.parametrize(("text", "matches"), [
    ("sni=shop.test", [OLD]),
    ("sni~api", [NEW]),
    ("tls_version<1.2", [OLD]),
    ("tls_version>=1.3", [NEW]),
    ("tls_version=TLSv1.3", [NEW]),
    ("handshake>50ms", [OLD]),
    ("handshake<0.01s", [NEW]),
    ("resumed", [OLD]),
    ("not resumed and tls_version", None),  # a bare field name is a word search: no error
    ("reset", [OLD]),
    ("tls_failed", [FAILED]),
    ("outcome=tls-failed", [FAILED]),
    ("retransmits>0", [OLD]),
    ("alpn=http/1.1 and cipher~AES128", [OLD]),
])
def test_wire_terms(text: str, matches: list[Exchange] | None) -> None:
    pred = compile_filter(text)
    got = [ex for ex in (OLD, NEW, FAILED, PLAIN) if pred(ex)]
    if matches is not None:
        assert got == matches


def test_bad_tls_version() -> None:
    with pytest.raises(FilterError, match="TLS version"):
        compile_filter("tls_version<new")
