"""The fast open path: same aggregates, same rows, same strictness as the full path."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from factories import make_event, make_exchange
from ngxscope.model import TCP, Exchange, UpstreamAttempt
from ngxscope.store import fastrecord
from ngxscope.store.aggregate import Aggregator
from ngxscope.store.bulkload import Batch, Done, paused_gc, scan
from ngxscope.store.codec import parse_record
from ngxscope.store.compat import CURRENT_VERSION
from ngxscope.store.fastrecord import RawExchange, check_exchange, decode_line
from ngxscope.store.session import SessionError, SessionReader, SessionWriter

SAMPLES = Path(__file__).parent / "samples"


def _attempts(i: int) -> list[UpstreamAttempt]:
    kind = i % 7
    if kind == 0:
        return []
    ok = UpstreamAttempt(addr=f"10.0.1.{i % 3}:8080", status=200, connect_ms=0.1, header_ms=1.0 + i % 5,
                         duration_ms=2.0 + i % 11, request_bytes=300, response_bytes=900 + i,
                         group=("app", "api", None)[i % 3])
    if kind == 1:
        return [ok]
    refused = UpstreamAttempt(addr="10.0.1.9:8080", status=None, group="app")
    if kind == 2:
        return [refused, ok]  # a retry after a refused connection
    bad = UpstreamAttempt(addr="10.0.1.8:8080", status=502, header_ms=None, response_bytes=0,
                          duration_ms=5.0, group="app", response_head=None)
    if kind == 3:
        return [bad, refused, ok]
    answered = UpstreamAttempt(addr="10.0.1.7:8080", status=503, header_ms=3.0, duration_ms=3.5,
                               response_head="HTTP/1.1 503 Busy\r\n\r\n", reused=True, start=1.0)
    return [answered] if kind == 4 else [ok, ok] if kind == 5 else [answered, ok]


def varied(n: int = 2400) -> list[Exchange]:
    """Statuses, attempts, errors, HTTP/2 and TCP, several workers, over more than the ring."""
    out = []
    for i in range(n):
        start = 1_700_000_000.0 + i * 0.9 + (i % 13) * 0.05  # spans ~36 min: the ring recycles
        proto = ("HTTP/1.1", "HTTP/2.0", TCP)[i % 3]
        out.append(make_exchange(
            start=start, end=start + (i % 17) * 0.013 + (0.0 if i % 19 else 40.0),
            pid=4100 + i % 3, status=(101, 200, 204, 304, 404, 499, 502, None, 999)[i % 9],
            version=proto, method=TCP if proto == TCP else ("GET", "POST")[i % 2],
            error="upstream timed out" if i % 11 == 0 else None,
            upstream=_attempts(i), request_body=b"x" * (i % 4), response_body=bytes(range(i % 256)),
        ))
    return out


def write(path: Path, exchanges: list[Exchange], *, end: bool = True) -> Path:
    w = SessionWriter(path, {"test": 1})
    w.write_event(make_event())
    for i, ex in enumerate(exchanges):
        w.write_exchange(ex)
        if i % 500 == 0:
            w.write_stats({"requests": i})
            w.write_event(make_event())
    w.close(clean=end)
    return path


def full_aggregate(path: Path) -> Aggregator:
    agg = Aggregator()
    agg.rebuild(SessionReader(path).exchanges())
    return agg


def fast(path: Path, keep: int, **kw: Any) -> tuple[Aggregator, Done, list[Batch]]:
    agg = Aggregator()
    batches: list[Batch] = []
    with paused_gc():
        for item in scan(SessionReader(path), keep, **kw):
            if isinstance(item, Done):
                return agg, item, batches
            batches.append(item)
            agg.feed_columns(*item.columns())
    raise AssertionError("no Done")


def assert_same_aggregates(a: Aggregator, b: Aggregator) -> None:
    for name in ("slot_sec", "counts", "hist", "total_classes"):
        assert (getattr(a, name) == getattr(b, name)).all(), name
    assert (a.total, a.latest, a.first) == (b.total, b.latest, b.first)
    assert a.workers.keys() == b.workers.keys() and a.peers.keys() == b.peers.keys()
    for table_a, table_b in ((a.workers, b.workers), (a.peers, b.peers)):
        for k, ka in table_a.items():
            kb = table_b[k]
            for f in ("requests", "errors", "failures", "retries", "bytes_sent", "bytes_received"):
                assert getattr(ka, f) == getattr(kb, f), (k, f)
            for f in ("classes", "hist", "ring"):
                assert (getattr(ka, f) == getattr(kb, f)).all(), (k, f)
            for f in ("resp", "header"):
                ha, hb = getattr(ka, f), getattr(kb, f)
                assert (ha is None) == (hb is None)
                if ha is not None:
                    assert ha.total == hb.total and (ha.counts == hb.counts).all(), (k, f)
    assert a.worker_rows() == b.worker_rows() or str(a.worker_rows()) == str(b.worker_rows())
    assert str(a.peer_rows()) == str(b.peer_rows()) and str(a.group_rows()) == str(b.group_rows())


def test_fast_path_aggregates_equal_the_full_path(tmp_path: Path) -> None:
    exchanges = varied()
    path = write(tmp_path / "v.ngxs", exchanges)
    want = full_aggregate(path)
    assert want.peers and len(want.workers) == 3 and want.total_classes.all()
    agg, done, batches = fast(path, keep=700)
    assert_same_aggregates(agg, want)
    assert done.total == len(exchanges) == sum(len(b) for b in batches)
    assert done.tail == exchanges[-700:], "the newest exchanges are the table rows, exact"
    assert len(done.events) == 1 + len(range(0, len(exchanges), 500))
    assert done.warning is None


def test_full_mode_builds_every_exchange(tmp_path: Path) -> None:
    exchanges = varied(600)
    path = write(tmp_path / "v.ngxs", exchanges)
    agg, done, batches = fast(path, keep=100, full=True)
    assert [e for b in batches for e in (b.exchanges or [])] == exchanges
    assert done.tail == exchanges[-100:]
    assert_same_aggregates(agg, full_aggregate(path))


@pytest.mark.parametrize("keep", [1, 2399, 2400, 5000])
def test_tail_at_every_size(tmp_path: Path, keep: int) -> None:
    exchanges = varied()
    path = write(tmp_path / "v.ngxs", exchanges)
    assert fast(path, keep)[1].tail == exchanges[-keep:]


def test_truncated_and_damaged_files_keep_what_survives(tmp_path: Path) -> None:
    exchanges = varied(1500)
    data = write(tmp_path / "whole.ngxs", exchanges).read_bytes()
    cut = tmp_path / "cut.ngxs"
    for size in (len(data) // 3, len(data) - 100, len(data) - 4):
        cut.write_bytes(data[:size])
        want = SessionReader(cut).read_all()
        agg, done, _ = fast(cut, keep=300)
        assert done.total == len(want.exchanges) > 0 and done.warning == want.warning
        assert done.tail == want.exchanges[-300:]
        ref = Aggregator()
        ref.rebuild(want.exchanges)
        assert_same_aggregates(agg, ref)
    outcomes = set()
    flips = [*range(len(data) // 5, len(data) - 20, len(data) // 7), len(data) - 6]  # last: CRC
    for at in flips:  # damage: a flipped byte
        damaged = bytearray(data)
        damaged[at] ^= 0xFF
        cut.write_bytes(bytes(damaged))
        try:
            want = SessionReader(cut).read_all()
        except SessionError as exc:  # the flip made a bad record before zlib saw it
            with pytest.raises(SessionError) as got:
                fast(cut, keep=300)
            assert str(got.value) == str(exc)
            outcomes.add("error")
            continue
        _, done, _ = fast(cut, keep=300)
        assert done.total == len(want.exchanges) and done.warning == want.warning
        assert done.tail == want.exchanges[-300:]
        outcomes.add("warning")
    assert "warning" in outcomes


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_frozen_samples_read_the_same(version: int) -> None:
    path = SAMPLES / f"session-v{version}.ngxs"
    want = SessionReader(path).read_all()
    agg, done, _ = fast(path, keep=1000)
    assert done.tail == want.exchanges and done.events == want.events
    assert done.warning == want.warning
    ref = Aggregator()
    ref.rebuild(want.exchanges)
    assert_same_aggregates(agg, ref)


def _lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def test_written_exchanges_take_the_fast_path(tmp_path: Path) -> None:
    """A format change the fast path does not follow would make opening slow again."""
    path = write(tmp_path / "v.ngxs", varied(300))
    kinds = set()
    for line in _lines(path)[1:]:
        rec = decode_line(line, CURRENT_VERSION)
        if line.startswith(b'{"t":"exchange"'):
            assert isinstance(rec, RawExchange)
            assert rec.build() == parse_record(line)
        kinds.add(type(rec).__name__)
    assert kinds == {"RawExchange", "LifecycleEvent", "dict"}


def _record(**changes: Any) -> dict[str, Any]:
    rec = {"t": "exchange", **make_exchange(upstream=_attempts(3)).to_dict()}
    rec.update(changes)
    return rec


def _attempt_change(**changes: Any) -> dict[str, Any]:
    rec = _record()
    rec["upstream"][0].update(changes)
    return rec


def _without(rec: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in keys}


BAD = [
    _record(surprise=1),
    {"t": "exchange", "surprise": 1, **_without(_record(), "t")},
    _attempt_change(surprise=True),
    _record(id="1"), _record(id=True), _record(tls=1), _record(status="200"), _record(start=True),
    _record(end=None), _record(pid=1.5), _record(error=3), _record(nginx_ms="1"),
    _record(request_headers=[["a", "b", "c"]]), _record(response_headers=[["a"]]),
    _record(request_headers=[5]), _record(request_headers="ab"),
    _record(response_body="abc"), _record(response_body="ab=c"), _record(request_body=7),
    _record(response_body="YWJj\n"),
    _record(upstream={"addr": "x"}), _record(upstream=["x"]),
    _attempt_change(status="502"), _attempt_change(group=1), _attempt_change(reused=0),
    _without(_record(), "id"),
    _record(upstream=[_without(_attempts(1)[0].to_dict(), "addr")]),
]
ODD_BUT_VALID = [
    _without(_record(), "nginx_ms", "server_block"),  # defaults
    _without(_record(), "duration_ms"),
    dict(reversed(list(_record().items()))),  # another key order
    _record(start=1_700_000_000, end=1_700_000_001),  # ints for floats
    _record(duration_ms="anything"),  # from_dict drops it
    _record(request_headers=[["a", 1], "xy", {"k": 1, "l": 2}]),  # str()-ed pairs
    _record(response_body="YW=="),
    _attempt_change(start=3, connect_ms=0),
]


def _line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":")).encode()


@pytest.mark.parametrize("rec", BAD, ids=range(len(BAD)))
def test_fast_path_is_exactly_as_strict(rec: dict[str, Any]) -> None:
    line = _line(rec)
    with pytest.raises(SessionError) as full:
        parse_record(line)
    with pytest.raises(SessionError) as quick:
        decode_line(line, CURRENT_VERSION)
    assert str(quick.value) == str(full.value)


@pytest.mark.parametrize("rec", ODD_BUT_VALID, ids=range(len(ODD_BUT_VALID)))
def test_odd_valid_records_read_the_same(rec: dict[str, Any]) -> None:
    line = _line(rec)
    got = decode_line(line, CURRENT_VERSION)
    assert (got.build() if isinstance(got, RawExchange) else got) == parse_record(line)


def test_records_the_fast_path_leaves_to_the_full_one() -> None:
    assert check_exchange(json.loads(_line(_record())))
    for rec in (*BAD, *ODD_BUT_VALID[:3]):
        assert not check_exchange(json.loads(_line(rec)))
    assert not check_exchange([1]) and not check_exchange({"t": "exchange"})


@given(st.text(alphabet="AZaz09+/=", max_size=12))
def test_canonical_base64_is_valid_base64(text: str) -> None:
    if fastrecord._B64.fullmatch(text):
        assert base64.b64decode(text, validate=True) == fastrecord.a2b_base64(text)


@given(st.binary(max_size=40))
def test_encoded_bodies_are_canonical(data: bytes) -> None:
    assert fastrecord._B64.fullmatch(base64.b64encode(data).decode())


def test_paused_gc_nests_and_restores() -> None:
    import gc

    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
