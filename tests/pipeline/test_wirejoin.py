"""The wire stage's join rules and nginx's error-log reasons (no eBPF: facts built by hand)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from factories import closed_connection, make_exchange
from ngxscope.decode.tlswire import ClientHello, ServerHello, TlsAlert
from ngxscope.decode.wire import ConnFacts
from ngxscope.pipeline import wirejoin
from ngxscope.pipeline.errorlog import HandshakeErrors, parse_failure
from ngxscope.pipeline.wirejoin import WireJoin, apply_facts, record_for

LINE = ("2026/12/06 20:31:12 [info] 8096#8096: *123 SSL_do_handshake() failed (SSL: error:0A000102:"
        "SSL routines::unsupported protocol) while SSL handshaking, client: 127.0.0.1, server: 127.0.0.1:8443")


def _facts(version: str = "TLSv1.3", server_alpn: str | None = None) -> ConnFacts:
    f = ConnFacts(client="127.0.0.1:5000", server="127.0.0.1:8443", syn_ts=10.0, synack_ts=10.0001,
                  ack_ts=10.0002, hello_ts=10.0003, server_hello_ts=10.001, tls_done_ts=10.002)
    f.client_hello = ClientHello(sni="a.test", alpn=["h2", "http/1.1"], session_id=b"x" * 32)
    f.server_hello = ServerHello(version=version, cipher="TLS_AES_256_GCM_SHA384", session_id=b"x" * 32,
                                 alpn=server_alpn, psk=False)
    return f


def test_tls13_alpn_is_the_protocol_spoken_and_resumption_is_psk() -> None:
    ex = make_exchange(version="HTTP/2.0")
    apply_facts(ex, _facts())
    assert (ex.alpn, ex.tls_resumed, ex.tls_version, ex.sni) == ("h2", False, "TLSv1.3", "a.test")
    assert ex.tcp_connect_ms == 0.2 and ex.tls_handshake_ms == 1.7 and ex.conn_start == 10.0
    ex = make_exchange(version="HTTP/1.1")
    apply_facts(ex, _facts())
    assert ex.alpn == "http/1.1"


def test_tls12_alpn_and_resumption_from_the_server_hello() -> None:
    ex = make_exchange(version="HTTP/1.1")
    apply_facts(ex, _facts("TLSv1.2", server_alpn="h2"))
    assert ex.alpn == "h2" and ex.tls_resumed is True  # the session id echoed


def test_records_of_connections_without_a_request() -> None:
    f = _facts()
    f.server_hello = None
    f.alerts.append(("server", TlsAlert(level=2, code=70)))
    f.end_ts = 10.01
    rec = record_for(f, 7)
    assert (rec.id, rec.conn_outcome, rec.status, rec.method) == (7, "tls-failed", None, "")
    assert rec.error == "TLS handshake failed: server alert: protocol_version"
    reset = ConnFacts(client="c:1", server="s:2", syn_ts=1.0, reset_by="client", end_ts=1.5)
    assert record_for(reset, 1).conn_outcome == "reset"
    closed = ConnFacts(client="c:1", server="s:2", syn_ts=1.0, fin_by="client", end_ts=1.5)
    assert record_for(closed, 1).error == "closed by the client before a request"


def test_error_log_reasons(tmp_path: Path) -> None:
    failure = parse_failure(LINE)
    assert failure is not None and failure.client == "127.0.0.1" and failure.reason == "unsupported protocol"
    assert parse_failure("2026/12/06 20:31:12 [error] 1#1: *1 open() failed") is None
    log = tmp_path / "error.log"
    log.write_text("old line before the capture: " + LINE + "\n")
    errors = HandshakeErrors([str(log), str(tmp_path / "missing.log")])
    now = time.time()
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
    with log.open("a") as f:
        f.write(LINE.replace("2026/12/06 20:31:12", stamp) + "\n")
        f.write(LINE.replace("2026/12/06 20:31:12", stamp).replace("unsupported protocol", "no shared cipher"))
    assert errors.reason_for("127.0.0.1:5000", now) == "unsupported protocol"
    assert errors.reason_for("127.0.0.2:5000", now) is None
    assert errors.reason_for("127.0.0.1:5001", now) is None  # the second line is not complete yet
    with log.open("a") as f:
        f.write("\n")
    assert errors.reason_for("127.0.0.1:5001", now) == "no shared cipher"
    errors.close()


def test_tls_connections_a_method_cannot_see_are_counted_not_recorded() -> None:
    """Syscalls only: a TLS connection with a completed handshake had requests nobody saw."""
    from ngxscope.pipeline.wirejoin import WireJoin

    for visible, want in ((True, ["closed", "tls-failed", "closed"]), (False, ["tls-failed", "closed"])):
        join = WireJoin(["127.0.0.1:8443"], tls_visible=visible)
        done = _facts()
        failed = _facts()
        failed.client = "127.0.0.1:5001"
        failed.server_hello = None
        plain = ConnFacts(client="127.0.0.1:5002", server="127.0.0.1:8080", syn_ts=10.0, fin_by="client")
        for f in (done, failed, plain):
            f.end_ts = 10.01
            join.tracker.conns[(f.client, f.server)] = f
        got = [r.conn_outcome for r in join.closed_records(1, now=20.0)]
        assert got == want, visible
        assert join.counters()["wire_tls_unseen"] == (0 if visible else 1)
        join.stop()


def test_a_connection_counted_in_the_kernel_is_no_record() -> None:
    """All requests of a connection sampled out and counted in the kernel: no exchange joins
    it, yet it must not become a "closed before a request" record, whether the count comes
    before or after its packets reached the tracker."""
    join = WireJoin(["127.0.0.1:8080"], grace=1.0)
    server = "127.0.0.1:8080"
    closed_connection(join.tracker, "127.0.0.1:5001", server, 10.0)   # counted after its packets were read
    join.counted("127.0.0.1:5001", server)
    join.counted("127.0.0.1:5002", server)               # counted before its packets were read
    closed_connection(join.tracker, "127.0.0.1:5002", server, 10.0)
    closed_connection(join.tracker, "127.0.0.1:5003", server, 10.0)   # no request at all
    join.counted("10.0.0.9:7", server)                   # never followed: forgotten in time
    recs = join.closed_records(1, now=20.0)
    assert [(r.client, r.conn_outcome) for r in recs] == [("127.0.0.1:5003", "closed")]
    assert join._counted == {("10.0.0.9:7", server): join._counted[("10.0.0.9:7", server)]}
    join.closed_records(1, now=time.time() + 31 * join.grace)
    assert join._counted == {}


def test_connections_counted_before_their_packets_are_held_within_a_bound(monkeypatch: Any) -> None:
    """A flood of counts for connections the tracker never sees cannot grow without end:
    past the bound the oldest half goes, the newest stay."""
    monkeypatch.setattr(wirejoin, "COUNTED_MAX", 8)
    join = WireJoin(["127.0.0.1:8080"], grace=1.0)
    for port in range(20):
        join.counted(f"10.0.0.1:{port}", "127.0.0.1:8080")
    assert 4 <= len(join._counted) <= 8
    assert ("10.0.0.1:19", "127.0.0.1:8080") in join._counted
    assert ("10.0.0.1:0", "127.0.0.1:8080") not in join._counted
