"""pcapng export, checked with the real tshark: HTTP requests, methods, URIs and status codes
as the session holds them, clean TCP (no analysis warnings), one interface per worker."""

from __future__ import annotations

import gzip
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import dpkt
import pytest

from capture.conftest import capture_factory  # noqa: F401 - the fixture, for the real capture
from factories import make_exchange
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange
from ngxscope.store.export_har import dechunk
from ngxscope.store.export_pcapng import MSS, chunked_fill, write_pcapng
from ngxscope.store.exporters import export
from ngxscope.store.session import SessionWriter

Triple = tuple[str, str, int]


def write_session(path: Path, exchanges: list[Exchange]) -> Path:
    with SessionWriter(path, {"pid": 1}) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    return path


def tshark(path: Path, *args: str) -> list[list[str]]:
    res = subprocess.run(
        ["tshark", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def http_triples(path: Path) -> list[Triple]:
    """(method, uri, status) of every HTTP request tshark dissects, paired per TCP stream."""
    rows = tshark(path, "-Y", "http", "-T", "fields", "-e", "tcp.stream",
                  "-e", "http.request.method", "-e", "http.request.uri", "-e", "http.response.code")
    requests: dict[str, list[tuple[str, str]]] = defaultdict(list)
    codes: dict[str, list[int]] = defaultdict(list)
    for stream, method, uri, code in rows:
        if method:
            requests[stream].append((method, uri))
        if code and int(code) >= 200:  # an interim 100 Continue is not the answer
            codes[stream].append(int(code))
    out = []
    for stream, reqs in requests.items():
        got = codes[stream]
        assert len(got) <= len(reqs), (stream, reqs, got)
        got = got + [-1] * (len(reqs) - len(got))  # the last requests may have had no answer
        out += [(m, u, c) for (m, u), c in zip(reqs, got, strict=True)]
    return sorted(out)


def expected(exchanges: list[Exchange]) -> list[Triple]:
    """(method, target, status or -1) of every exchange with a parsed request."""
    return sorted((e.method, e.target, -1 if e.status is None else e.status)
                  for e in exchanges if e.method)


def assert_clean_tcp(path: Path) -> None:
    """No TCP analysis flag (retransmission, lost or unseen segment...), nothing malformed,
    and no expert warning but Wireshark's note that plaintext HTTP uses a TLS port (it does:
    the capture decrypted it)."""
    bad = tshark(path, "-Y", "tcp.analysis.flags || _ws.malformed || _ws.expert.severity >= error")
    assert bad == [], bad[:5]
    res = subprocess.run(["tshark", "-r", str(path), "-q", "-z", "expert,warn"],
                         capture_output=True, text=True, timeout=120, check=True)
    warnings = [ln for ln in res.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert all("Unencrypted HTTP protocol detected over encrypted port" in w for w in warnings), warnings


def test_real_capture_dissects_like_the_session(
    lab_nginx: LabNginx, capture_factory: Any, tmp_path: Path  # noqa: F811
) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=1, concurrency=2)
    exchanges = cap.wait_for(sent)
    cap.stop()
    assert len(exchanges) >= sent
    # what the mix must have exercised, so the check below means something
    assert any(e.tls for e in exchanges) and any(not e.tls for e in exchanges)
    assert any(e.sendfile_bytes for e in exchanges), "sendfile body"
    assert any(e.truncated for e in exchanges), "a body beyond the payload cap"
    assert any(e.method == "HEAD" for e in exchanges)
    assert {204, 304} <= {e.status for e in exchanges}
    assert any(e.method == "POST" and e.request_body_size > 64 * 1024 for e in exchanges)
    assert any(e.conn_seq >= 4 for e in exchanges), "keep-alive / pipelining"
    src = write_session(tmp_path / "real.ngxs", exchanges)
    out = tmp_path / "real.pcapng"
    assert export(src, "pcapng", out) == len(exchanges)
    got = http_triples(out)
    assert got == expected(exchanges)
    assert len(got) >= sent
    assert_clean_tcp(out)
    # one interface per worker, each packet saying its process
    rows = tshark(out, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.comment")
    pids = {e.pid for e in exchanges}
    assert {name for name, _ in rows} == {f"nginx-worker-{pid}" for pid in pids}
    for name, comment in rows:
        assert comment.startswith(f"pid={name.rsplit('-', 1)[1]} conn=")
    assert any(" tls=1 " in c for _, c in rows) and any("pad=" in c for _, c in rows)
    # the plaintext of TLS requests is there
    tls_ex = next(e for e in exchanges if e.tls and e.response_body)
    assert tls_ex.response_body[:200] in out.read_bytes() or tls_ex.response_body_size > MSS


def test_keepalive_connection_has_one_handshake_and_consistent_sequence(tmp_path: Path) -> None:
    conn = [make_exchange(conn_id="77:9:1", conn_seq=i, client="10.1.2.3:5555",
                          server="10.9.9.9:443", tls=True, target=f"/k/{i}") for i in range(5)]
    big = b"B" * 10_000
    conn.append(make_exchange(conn_id="77:9:1", conn_seq=5, client="10.1.2.3:5555",
                              server="10.9.9.9:443", tls=True, target="/k/big", response_body=big,
                              response_headers=[("Content-Length", str(len(big)))]))
    src = write_session(tmp_path / "s.ngxs", conn)
    out = tmp_path / "s.pcapng"
    export(src, "pcapng", out)
    assert http_triples(out) == expected(conn)
    assert_clean_tcp(out)
    rows = tshark(out, "-T", "fields", "-e", "tcp.stream", "-e", "tcp.flags.syn",
                  "-e", "tcp.flags.fin", "-e", "tcp.len", "-e", "ip.src", "-e", "tcp.srcport")
    assert {r[0] for r in rows} == {"0"}, "one TCP stream"
    assert sum(r[1] in ("1", "True") for r in rows) == 2  # SYN, SYN-ACK
    assert sum(r[2] in ("1", "True") for r in rows) == 2  # FIN both ways, at the end
    assert max(int(r[3]) for r in rows) <= MSS
    assert {(r[4], r[5]) for r in rows} == {("10.1.2.3", "5555"), ("10.9.9.9", "443")}
    # the last TCP payload of the server carries the end of the big body
    with open(out, "rb") as f:
        payloads = [dpkt.ethernet.Ethernet(buf).data.data.data for _, buf in dpkt.pcapng.Reader(f)]
    assert b"".join(payloads).endswith(b"B" * 100)


def test_truncated_bodies_keep_http_framing(tmp_path: Path) -> None:
    """Cut chunked and Content-Length bodies and a sendfile body, each followed by another
    exchange on the same connection: tshark must still find every message."""
    chunk = b"2000\r\n" + b"c" * 0x2000 + b"\r\n"
    framed = chunk * 8 + b"0\r\n\r\n"
    exs = [
        make_exchange(conn_id="c1", conn_seq=0, client="127.0.0.1:50001", target="/chunked",
                      response_body=framed[:20_000], response_body_size=len(framed),
                      truncated=True, response_headers=[("Transfer-Encoding", "chunked")]),
        make_exchange(conn_id="c1", conn_seq=1, client="127.0.0.1:50001", target="/after-chunked"),
        make_exchange(conn_id="c2", conn_seq=0, client="127.0.0.1:50002", target="/cl",
                      response_body=b"x" * 3000, response_body_size=90_000, truncated=True,
                      response_headers=[("Content-Length", "90000")]),
        make_exchange(conn_id="c2", conn_seq=1, client="127.0.0.1:50002", target="/sendfile",
                      response_body=b"", response_body_size=70_000, sendfile_bytes=70_000,
                      response_headers=[("Content-Length", "70000")]),
        make_exchange(conn_id="c2", conn_seq=2, client="127.0.0.1:50002", target="/after-cl"),
        make_exchange(conn_id="c3", conn_seq=0, client="127.0.0.1:50003", method="POST",
                      target="/up", request_body=b"p" * 1000, request_body_size=200_000,
                      truncated=True, request_headers=[("Host", "h"), ("Content-Length", "200000")]),
        make_exchange(conn_id="c3", conn_seq=1, client="127.0.0.1:50003", target="/after-up"),
    ]
    src = write_session(tmp_path / "s.ngxs", exs)
    out = tmp_path / "s.pcapng"
    export(src, "pcapng", out)
    assert http_triples(out) == expected(exs)
    assert_clean_tcp(out)


def test_ipv6_gzip_no_response_and_unparsed(tmp_path: Path) -> None:
    gz = gzip.compress(b"z" * 5000)
    exs = [
        make_exchange(client="[2001:db8::1]:40000", server="[2001:db8::2]:8443", target="/v6",
                      response_body=gz, response_headers=[("Content-Encoding", "gzip"),
                                                          ("Content-Length", str(len(gz)))]),
        make_exchange(client="unix:", server="unix:/run/nginx.sock", target="/unix"),
        make_exchange(target="/gone", status=None, reason="", response_headers=[],
                      response_body=b"", error="client went away"),
        make_exchange(method="", target="", status=None, request_headers=[],
                      request_body=b"\x16\x03\x01junk", response_body=b"", error="not HTTP"),
    ]
    src = write_session(tmp_path / "s.ngxs", exs)
    out = tmp_path / "s.pcapng"
    assert export(src, "pcapng", out) == 4
    assert http_triples(out) == expected(exs)
    rows = tshark(out, "-Y", "ipv6", "-T", "fields", "-e", "ipv6.src")
    assert {r[0] for r in rows} == {"2001:db8::1", "2001:db8::2"}
    reqs = tshark(out, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")
    assert ["/gone"] in reqs


@pytest.mark.parametrize("cut", [0, 3, 6, 100, 8197, 8198, 8199, 20_000])
@pytest.mark.parametrize("extra", [0, 5, 7, 11, 30, 5000])
def test_chunked_fill_is_exact_and_valid(cut: int, extra: int) -> None:
    framed = (b"2000\r\n" + b"c" * 0x2000 + b"\r\n") * 3 + b"0\r\n\r\n"
    total = len(framed) + extra
    pieces = chunked_fill(framed[:cut], total)
    assert pieces is not None
    data = b"".join(bytes(p) if isinstance(p, int) else p for p in pieces)
    assert len(data) == total
    _, complete = dechunk(data)
    assert complete
    assert data.endswith(b"0\r\n\r\n")


def test_pcapng_blocks_read_back_with_dpkt(tmp_path: Path) -> None:
    exs = [make_exchange(pid=p) for p in (11, 22, 11)]
    out = tmp_path / "s.pcapng"
    with open(out, "wb") as f:
        assert write_pcapng(exs, f, pids=[11, 22]) == 3
    with open(out, "rb") as f:
        reader = dpkt.pcapng.Reader(f)
        packets = list(reader)
    assert len(packets) == 3 * (3 + 2 + 3)  # handshake, request + response, FIN/FIN/ACK
    assert out.read_bytes().count(b"nginx-worker-") == 2  # one interface per pid
