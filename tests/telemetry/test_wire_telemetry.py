"""Socket-filter fields in Prometheus metrics (bounded labels), OTLP attributes and `stats`."""

from __future__ import annotations

from prometheus_client import generate_latest

from factories import make_exchange
from ngxscope.store.summary import format_summary, summarize
from ngxscope.telemetry.otlp import exchange_attributes, wire_attributes
from ngxscope.telemetry.prometheus import MetricsSink

T0 = 1_700_000_000.0


def _batch() -> list:
    first = make_exchange(conn_id="c1", conn_seq=0, tls=True, conn_start=T0, tcp_connect_ms=0.2,
                          tls_handshake_ms=3.0, tls_version="TLSv1.3", tls_cipher="TLS_AES_128_GCM_SHA256",
                          sni="shop.test", alpn="h2", tls_resumed=True, retransmits=1, reset_by="client")
    second = make_exchange(conn_id="c1", conn_seq=1, tls=True, conn_start=T0, tcp_connect_ms=0.2,
                           tls_handshake_ms=3.0, tls_version="TLSv1.3", tls_cipher="TLS_AES_128_GCM_SHA256",
                           sni="shop.test", alpn="h2", tls_resumed=True)
    failed = make_exchange(conn_id="", method="", target="", status=None, upstream=[], tls=True,
                           conn_start=T0, tcp_connect_ms=0.1, conn_outcome="tls-failed",
                           error="TLS handshake failed: server alert: protocol_version")
    return [first, second, failed]


def test_prometheus_counts_handshakes_once_and_failures_apart() -> None:
    sink = MetricsSink()
    for ex in _batch():
        sink.write_exchange(ex)
    text = generate_latest(sink.registry).decode()
    assert 'ngxscope_tls_handshakes_total{resumed="true",server_block="unknown",version="TLSv1.3"} 1.0' in text
    assert ('ngxscope_connections_without_request_total{outcome="tls-failed",reason="protocol_version"} 1.0'
            in text)
    assert "ngxscope_tcp_connect_duration_seconds_count 2.0" in text
    requests = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ngxscope_http_requests_total{"))
    assert requests == 2  # the failed handshake is no HTTP request


def test_otlp_attributes() -> None:
    first = _batch()[0]
    attrs = wire_attributes(first)
    assert attrs["tls.protocol.name"] == "tls" and attrs["tls.protocol.version"] == "1.3"
    assert attrs["tls.cipher"] == "TLS_AES_128_GCM_SHA256" and attrs["tls.client.server_name"] == "shop.test"
    assert attrs["tls.next_protocol"] == "h2" and attrs["tls.resumed"] is True
    assert attrs["ngxscope.tcp.retransmits"] == 1 and attrs["ngxscope.tcp.reset_by"] == "client"
    assert exchange_attributes(first)["tls.cipher"] == "TLS_AES_128_GCM_SHA256"
    assert wire_attributes(make_exchange()) == {}


def test_stats_section() -> None:
    s = summarize(_batch())
    assert s.requests == 2
    w = s.wire
    assert (w.connections, w.tls, w.resumed, w.resets) == (2, 1, 1, 1)
    assert w.failures == {"server alert: protocol_version": 1} and w.no_request == {"tls-failed": 1}
    text = format_summary(s)
    assert "connections (socket filter)" in text and "TLSv1.3 1" in text
    assert s.to_dict()["wire"]["versions"] == {"TLSv1.3": 1}
