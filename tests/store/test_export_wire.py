"""Exports and the socket filter's fields: HAR connect/ssl timings; records of connections
that never became a request are left out of HAR and pcapng (they hold HTTP)."""

from __future__ import annotations

import io
import json

from factories import make_exchange
from ngxscope.store.export_har import har_entry, write_har
from ngxscope.store.export_pcapng import write_pcapng


def test_har_timings_connect_and_ssl() -> None:
    first = make_exchange(conn_seq=0, tls=True, tcp_connect_ms=0.5, tls_handshake_ms=2.25)
    t = har_entry(first)["timings"]
    assert (t["connect"], t["ssl"]) == (2.75, 2.25)
    assert har_entry(first)["time"] == round(first.duration_ms + 2.75, 3)
    later = make_exchange(conn_seq=1, tls=True, tcp_connect_ms=0.5, tls_handshake_ms=2.25)
    assert (har_entry(later)["timings"]["connect"], har_entry(later)["timings"]["ssl"]) == (-1, -1)
    plain = make_exchange(conn_seq=0, tls=False, tcp_connect_ms=0.5)
    assert (har_entry(plain)["timings"]["connect"], har_entry(plain)["timings"]["ssl"]) == (0.5, -1)


def test_connection_records_are_not_exported_as_http() -> None:
    ok = make_exchange()
    failed = make_exchange(method="", target="", status=None, upstream=[], conn_outcome="tls-failed",
                           error="TLS handshake failed: server alert: protocol_version")
    out = io.BytesIO()
    assert write_har([ok, failed], out) == 1
    assert len(json.loads(out.getvalue())["log"]["entries"]) == 1
    assert write_pcapng([ok, failed], io.BytesIO()) == 1
