"""The socket filter's facts joined to exchanges of the fallback capture methods.

The wire join works on the exchange's 4-tuple alone, whatever method captured it. Each
method is driven with real TLS clients (TLS 1.2 and 1.3, SNI, ALPN, resumption) and plain
keep-alive connections, and compared with nginx's access log as
tests/capture/test_wire_vs_accesslog.py does for the two I/O modes:
- libssl uprobes + syscalls (Debian's nginx with its ngx_* names renamed);
- built-in SSL uprobes (the static-OpenSSL build, ngx_* renamed: SSL found by symbol);
- syscalls only (static OpenSSL that cannot be located): plain exchanges get their TCP
  facts; TLS connections, whose requests cannot be seen, must not be reported as
  connections "closed before a request".
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from factories import keepalive_health
from ngxscope.capture.binary import METHOD_BUILTIN_SSL, METHOD_LIBSSL_SYSCALLS, METHOD_SYSCALLS_ONLY
from ngxscope.capture.sslfind import SslSearch
from ngxscope.lab.nginx import LabNginx

from .test_fallback import renamed_lab, renamed_nginx  # noqa: F401 - the fixture
from .test_static_openssl import built, lab_of  # noqa: F401 - the fixture
from .test_wire_vs_accesslog import ALPNS, SNIS, _ctx, _requests, compare_tls

pytestmark = pytest.mark.capture


def _tls_traffic(port: int) -> int:
    """Keep-alive TLS connections and a resumption of each; returns the request count."""
    sent = n = 0
    for version in ("1.2", "1.3"):
        for sni in SNIS[:2]:
            for alpn in ALPNS:
                ctx = _ctx(version, alpn)
                ids = [f"f{n}-{i}" for i in range(2)]
                session = _requests(port, ctx, sni, ids)
                _requests(port, ctx, sni, [f"f{n}-r"], session=session)
                sent += 3
                n += 1
    return sent


def _plain(port: int, ids: list[str]) -> str:
    """Keep-alive plain requests on one connection; returns the client address."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        client = f"127.0.0.1:{s.getsockname()[1]}"
        keepalive_health(s, ids)
    return client


def _wire_vs_log(lab: LabNginx, cap: Any) -> None:
    assert cap.recorder.wire is not None, "the socket filter attached"
    sent = _tls_traffic(lab.tls_port)
    plain_ids = [f"p-{i}" for i in range(3)]
    client = _plain(lab.plain_port, plain_ids)
    sent += len(plain_ids)
    log = lab.wait_log_lines(sent)
    assert len(log) == sent
    cap.wait_for(sent)
    time.sleep(2.5)  # past the wire's grace: records of connections without a request
    stats = cap.recorder.counters()
    cap.stop()
    exchanges = cap.sink.exchanges
    tls_log = [line for line in log if line["https"] == "on"]
    problems = compare_tls(tls_log, exchanges)
    plain = [ex for ex in exchanges if ex.client == client]
    print(f"\n{cap.line}\naccess log {len(log)} lines ({len(tls_log)} TLS), fields unequal: "
          f"{len(problems)}; wire {stats.get('wire_passed')} passed, unmatched "
          f"{stats.get('wire_unmatched')}; records {[r.conn_outcome for r in cap.sink.connections]}")
    assert not problems, "\n".join(problems[:40])
    assert len(plain) == len(plain_ids)
    assert all(ex.tcp_connect_ms is not None and ex.tls_version is None for ex in plain)
    assert not cap.sink.connections, "every connection had requests"


def test_wire_libssl_syscalls(renamed_lab: LabNginx, capture_factory: Any) -> None:  # noqa: F811
    cap = capture_factory(pid=renamed_lab.master_pid)
    assert METHOD_LIBSSL_SYSCALLS in cap.line
    _wire_vs_log(renamed_lab, cap)


def test_wire_builtin_ssl(tmp_path: Path, lab_of: Any, capture_factory: Any) -> None:  # noqa: F811
    lab = lab_of(str(renamed_nginx(tmp_path, built("static-ssl"))))
    cap = capture_factory(pid=lab.master_pid)
    assert METHOD_BUILTIN_SSL in cap.line
    _wire_vs_log(lab, cap)


def test_wire_syscalls_only(lab_of: Any, capture_factory: Any,  # noqa: F811
                            monkeypatch: pytest.MonkeyPatch) -> None:
    from ngxscope.capture import binary as binary_mod

    monkeypatch.setattr(binary_mod, "find_ssl_functions",
                        lambda image: SslSearch(problems=["test: not located"]))
    binary_mod.clear_cache()
    try:
        lab = lab_of(built("static-ssl-nosym"))
        cap = capture_factory(pid=lab.master_pid)
        assert METHOD_SYSCALLS_ONLY in cap.line
        assert cap.recorder.wire is not None
        tls = _tls_traffic(lab.tls_port)
        plain_ids = [f"p-{i}" for i in range(3)]
        client = _plain(lab.plain_port, plain_ids)
        log = lab.wait_log_lines(tls + len(plain_ids))
        cap.wait_for(len(plain_ids))
        time.sleep(2.5)
        stats = cap.recorder.counters()
        cap.stop()
    finally:
        binary_mod.clear_cache()
    plain_log = [line for line in log if line["https"] != "on"]
    assert len(plain_log) == len(plain_ids)
    plain = [ex for ex in cap.sink.exchanges if ex.client == client]
    assert len(plain) == len(plain_ids) and all(ex.tcp_connect_ms is not None for ex in plain)
    assert not [ex for ex in cap.sink.exchanges if ex.tls]
    records = cap.sink.connections
    print(f"\nsyscalls only: {len(plain)} plain exchanges with TCP facts; records "
          f"{[(r.conn_outcome, r.error) for r in records][:5]}; TLS connections unseen "
          f"{stats.get('wire_tls_unseen')}")
    assert not records, "TLS connections whose requests this method cannot see are no records " \
        "of connections without a request"
    assert stats["wire_tls_unseen"] == tls // 3 * 2, "each TLS connection counted"
