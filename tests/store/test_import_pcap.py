"""pcap / pcapng of plaintext HTTP/1: reassembly (reordering, retransmission, gaps),
pipelining, framing, link types, bad files (one line, never a traceback)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.store.foreign import foreign_kind, read_foreign
from ngxscope.store.import_pcap import import_pcap
from ngxscope.store.session import SessionError

CLIENT, SERVER = ("127.0.0.1", 40001), ("127.0.0.1", 8080)


def _packet(src: tuple[str, int], dst: tuple[str, int], seq: int, data: bytes = b"",
            flags: int = dpkt.tcp.TH_ACK, link: str = "eth") -> bytes:
    tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq, flags=flags, data=data)
    ip = dpkt.ip.IP(src=bytes(map(int, src[0].split("."))), dst=bytes(map(int, dst[0].split("."))),
                    p=dpkt.ip.IP_PROTO_TCP, data=tcp)
    ip.len = len(bytes(ip))
    if link == "raw":
        return bytes(ip)
    return bytes(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


def _conversation(req: bytes, resp: bytes, *, mss: int = 7, shuffle: bool = False,
                  dup: bool = False, drop: int | None = None, cport: int = 40001,
                  link: str = "eth") -> list[tuple[float, bytes]]:
    client = (CLIENT[0], cport)
    pkts = [(1.0, _packet(client, SERVER, 999, flags=dpkt.tcp.TH_SYN, link=link)),
            (1.001, _packet(SERVER, client, 4999, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
                            link=link))]
    segs = []
    for i in range(0, len(req), mss):
        segs.append((1.01 + i * 1e-6, _packet(client, SERVER, 1000 + i, req[i:i + mss], link=link)))
    rsegs = []
    for i in range(0, len(resp), mss):
        rsegs.append((1.02 + i * 1e-6, _packet(SERVER, client, 5000 + i, resp[i:i + mss], link=link)))
    if drop is not None:
        del rsegs[drop]
    if shuffle:
        random.Random(3).shuffle(segs)
    if dup:
        segs += segs[:3]
    return pkts + segs + rsegs


def _write(path: Path, pkts: list[tuple[float, bytes]], ng: bool = False,
           linktype: int = dpkt.pcap.DLT_EN10MB) -> Path:
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f, linktype=linktype) if ng else dpkt.pcap.Writer(f, linktype=linktype)
        for ts, buf in pkts:
            w.writepkt(buf, ts=ts)
    return path


REQ = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
       b"POST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
       b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
RESP = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nmade\r\n0\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.parametrize("ng", [False, True])
@pytest.mark.parametrize(("shuffle", "dup"), [(False, False), (True, True)])
def test_pipelined_exchanges_reassembled(tmp_path: Path, ng: bool, shuffle: bool, dup: bool) -> None:
    path = _write(tmp_path / "a.cap", _conversation(REQ, RESP, shuffle=shuffle, dup=dup), ng)
    assert foreign_kind(path) == ("pcapng" if ng else "pcap")
    s = read_foreign(path)
    assert s is not None and s.warning is None
    got = [(e.method, e.target, e.status, e.request_bytes, e.response_bytes, e.conn_seq)
           for e in s.exchanges]
    r1, r2, r3 = (REQ.index(b"POST"), REQ.index(b"PUT") - REQ.index(b"POST"),
                  len(REQ) - REQ.index(b"PUT"))
    s1 = RESP.index(b"HTTP/1.1 100")
    s3 = len(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert got == [
        ("GET", "/a", 200, r1, s1, 0),
        ("POST", "/b?q=1", 201, r2, len(RESP) - s1 - s3, 1),  # the 100 Continue counted too
        ("PUT", "/c", 204, r3, s3, 2),
    ]
    a, b, c = s.exchanges
    assert (a.client, a.server, a.host, a.tls, a.pid) == ("127.0.0.1:40001", "127.0.0.1:8080", "x",
                                                           False, 0)
    assert b.request_body == b"hello" and b.response_body == b"4\r\nmade\r\n0\r\n\r\n"
    assert c.request_body == b"3\r\nabc\r\n0\r\n\r\n" and c.request_body_size == 13
    assert a.conn_id == b.conn_id == c.conn_id
    assert a.start <= a.end and [e.id for e in s.exchanges] == [1, 2, 3]


def test_gap_and_raw_ip_and_tls(tmp_path: Path) -> None:
    pkts = _conversation(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                         b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n" + b"z" * 30, drop=8,
                         link="raw")
    pkts += _conversation(b"\x16\x03\x01\x02\x00" + b"\x01" * 40, b"\x16\x03\x03" + b"\x02" * 30,
                          cport=40002, link="raw")
    s = import_pcap(_write(tmp_path / "g.pcap", pkts, linktype=dpkt.pcap.DLT_RAW))
    (ex,) = s.exchanges
    assert ex.status == 200 and ex.truncated and len(ex.response_body) < 30
    assert s.warning is not None and "gap" in s.warning and "1 connection(s) without" in s.warning


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "not a pcap"),
    (b"\xd4\xc3\xb2\xa1" + b"\x00" * 5, "cannot read"),
    (b"\x0a\x0d\x0d\x0a\x00\x00", "cannot read"),
])
def test_bad_files_are_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(SessionError, match=needle):
        import_pcap(path)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2000), st.binary(max_size=16))
def test_fuzz_truncated_or_damaged_pcap(cut: int, junk: bytes) -> None:
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf)
    for ts, pkt in _conversation(REQ, RESP, mss=50):
        w.writepkt(pkt, ts=ts)
    data = buf.getvalue()
    data = data[:24 + cut] + junk
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        f.write(data)
        f.flush()
        try:
            s = import_pcap(f.name)
        except SessionError as exc:
            assert "\n" not in str(exc)
            return
        assert all(e.method for e in s.exchanges)
