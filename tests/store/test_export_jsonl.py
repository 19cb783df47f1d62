"""JSON Lines export of a session: order, content, outputs and bounded memory."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from factories import make_exchange
from ngxscope.model import Exchange
from ngxscope.store.export_jsonl import exchange_line, export_jsonl
from ngxscope.store.session import SessionError, SessionWriter

TARGET = {"pid": 1}


def session(path: Path, exchanges: list[Exchange]) -> Path:
    with SessionWriter(path, TARGET) as w:
        for ex in exchanges:
            w.write_exchange(ex)
        w.write_stats({"requests": len(exchanges)})
    return path


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def test_order_by_start_then_id(tmp_path: Path) -> None:
    # Completion order (file order) differs from start order, with ties on start.
    exchanges = [
        make_exchange(id=1, start=30.0),
        make_exchange(id=2, start=10.0),
        make_exchange(id=5, start=20.0),
        make_exchange(id=3, start=20.0),
        make_exchange(id=4, start=5.0),
        make_exchange(id=3, start=20.0, target="/same-key-later"),
    ]
    src = session(tmp_path / "s.ngxs", exchanges)
    out = tmp_path / "out.jsonl"
    assert export_jsonl(src, out) == 6
    rows = read_jsonl(out.read_bytes())
    assert [(r["start"], r["id"]) for r in rows] == [
        (5.0, 4),
        (10.0, 2),
        (20.0, 3),
        (20.0, 3),
        (20.0, 5),
        (30.0, 1),
    ]
    assert rows[3]["target"] == "/same-key-later"  # stable on equal keys
    by_key = {(e.start, e.id, e.target): e for e in exchanges}
    for row in rows:
        ex = by_key[(row["start"], row["id"], row["target"])]
        assert row == ex.to_dict()
        assert Exchange.from_dict(row) == ex


def test_already_sorted_session_and_content(tmp_path: Path) -> None:
    exchanges = [make_exchange(response_body=os.urandom(100)) for _ in range(200)]
    src = session(tmp_path / "s.ngxs", exchanges)
    out = tmp_path / "out.jsonl"
    assert export_jsonl(src, out) == 200
    assert out.read_bytes() == b"".join(exchange_line(e) for e in exchanges)


def test_unicode_is_utf8_and_surrogates_are_escaped() -> None:
    line = exchange_line(make_exchange(request_headers=[("X", "東京")]))
    assert "東京".encode() in line
    line = exchange_line(make_exchange(request_headers=[("X", "bad \udcff")]))
    line.decode("utf-8")  # valid UTF-8
    assert b"\\udcff" in line
    assert json.loads(line)["request_headers"] == [["X", "bad \udcff"]]


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_file_objects(tmp_path: Path, kind: str) -> None:
    exchanges = [make_exchange(start=float(10 - i), request_headers=[("X", "é")]) for i in range(5)]
    src = session(tmp_path / "s.ngxs", exchanges)
    buf: Any = io.StringIO() if kind == "text" else io.BytesIO()
    assert export_jsonl(src, buf) == 5
    data = buf.getvalue()
    rows = read_jsonl(data.encode() if kind == "text" else data)
    assert [r["id"] for r in rows] == [e.id for e in reversed(exchanges)]
    assert not buf.closed


def test_output_file_mode_and_replace(tmp_path: Path) -> None:
    src = session(tmp_path / "s.ngxs", [make_exchange()])
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    assert export_jsonl(str(src), str(out)) == 1
    assert len(read_jsonl(out.read_bytes())) == 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "s.ngxs"]


def test_empty_session(tmp_path: Path) -> None:
    src = session(tmp_path / "s.ngxs", [])
    out = tmp_path / "out.jsonl"
    assert export_jsonl(src, out) == 0
    assert out.read_bytes() == b""


def test_truncated_session_exports_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.ngxs"
    exchanges = [make_exchange() for _ in range(5)]
    w = SessionWriter(path, TARGET)
    for ex in exchanges:
        w.write_exchange(ex)
    w.flush()  # left open: the file has no gzip trailer and no end record
    try:
        with caplog.at_level(logging.WARNING):
            assert export_jsonl(path, tmp_path / "out.jsonl") == 5
    finally:
        w.close()
    assert "file is truncated: read 5 exchanges" in caplog.text


def test_errors_leave_no_output(tmp_path: Path) -> None:
    lines = [
        json.dumps({"t": "header", "format": "ngxscope-session", "version": 1}).encode(),
        json.dumps({"t": "exchange", **make_exchange().to_dict()}).encode(),
        b'{"t": "exchange", "bogus": 1}',
    ]
    bad = tmp_path / "bad.ngxs"
    bad.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    out = tmp_path / "out.jsonl"
    with pytest.raises(SessionError, match="line 3"):
        export_jsonl(bad, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ngxs"]
    with pytest.raises(SessionError, match="cannot open session file"):
        export_jsonl(tmp_path / "missing.ngxs", out)
    src = session(tmp_path / "s.ngxs", [make_exchange()])
    with pytest.raises(SessionError, match="cannot export to"):
        export_jsonl(src, tmp_path / "no-such-dir" / "out.jsonl")


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """The exported data (~25 MB) never sits in memory: only a few bytes per exchange."""
    n = 4000
    exchanges = (
        make_exchange(start=float((i * 7919) % n), response_body=os.urandom(4096)) for i in range(n)
    )
    src = tmp_path / "s.ngxs"
    with SessionWriter(src, TARGET) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    out = tmp_path / "out.jsonl"
    tracemalloc.start()
    try:
        assert export_jsonl(src, out) == n
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.stat().st_size > 20_000_000
    assert peak < 5_000_000
    starts = [json.loads(line)["start"] for line in out.read_bytes().splitlines()]
    assert starts == sorted(starts)


def test_nginx_fields_are_exported(tmp_path: Path) -> None:
    """realip's client, nginx's $msec and the subrequests' attempts are in the line."""
    from ngxscope.model import UpstreamAttempt

    ex = make_exchange(remote="192.0.2.7", nginx_end=1733530000.123,
                       subrequest_upstream=[UpstreamAttempt(addr="10.0.0.9:80", status=200)])
    src = session(tmp_path / "s.ngxs", [ex])
    out = tmp_path / "out.jsonl"
    assert export_jsonl(src, out) == 1
    (line,) = read_jsonl(out.read_bytes())
    assert line["remote"] == "192.0.2.7" and line["nginx_end"] == 1733530000.123
    assert [a["addr"] for a in line["subrequest_upstream"]] == ["10.0.0.9:80"]
