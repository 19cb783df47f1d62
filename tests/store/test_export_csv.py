"""CSV export: the table's columns, RFC 4180 quoting, formula-injection safety."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from factories import make_exchange
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.export_csv import COLUMNS, safe_cell
from ngxscope.store.exporters import export
from ngxscope.store.session import SessionWriter


def write_session(path: Path, exchanges: list[Exchange]) -> Path:
    with SessionWriter(path, {"pid": 1}) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    return path


def rows(path: Path) -> list[list[str]]:
    data = path.read_bytes()
    assert data.endswith(b"\r\n")
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def test_columns_values_and_order(tmp_path: Path) -> None:
    exs = [
        make_exchange(id=2, start=2.0, end=2.0421, target="/b?x=1,2", tls=True, upstream=[
            UpstreamAttempt(addr="10.0.0.1:80", status=502), UpstreamAttempt(addr="10.0.0.2:80")],
            remote="192.0.2.7", nginx_end=2.042, subrequest_upstream=[UpstreamAttempt(addr="10.0.0.9:80")]),
        make_exchange(id=1, start=1.0, end=1.5, host='we"ird', status=None, error="timed out"),
    ]
    src = write_session(tmp_path / "s.ngxs", exs)
    out = tmp_path / "s.csv"
    assert export(src, "csv", out) == 2
    table = rows(out)
    assert table[0] == COLUMNS
    first, second = table[1], table[2]
    assert first[:2] == ["1970-01-01T00:00:01.000Z", "4242"]
    assert first[COLUMNS.index("host")] == 'we"ird'
    assert first[COLUMNS.index("status")] == "" and first[COLUMNS.index("error")] == "timed out"
    assert first[COLUMNS.index("duration_ms")] == "500.000"
    assert second[COLUMNS.index("path")] == "/b?x=1,2"
    assert second[COLUMNS.index("upstream")] == "10.0.0.1:80 > 10.0.0.2:80"
    assert second[COLUMNS.index("tls")] == "1" and second[COLUMNS.index("status")] == "200"
    assert second[COLUMNS.index("duration_ms")] == "42.100"
    assert int(second[COLUMNS.index("request_bytes")]) == exs[0].request_bytes
    assert second[COLUMNS.index("remote")] == "192.0.2.7" and first[COLUMNS.index("remote")] == ""
    assert second[COLUMNS.index("nginx_msec")] == "2.042" and first[COLUMNS.index("nginx_msec")] == ""
    assert second[COLUMNS.index("subrequest_upstream")] == "10.0.0.9:80"
    assert b'"we""ird"' in out.read_bytes() and b'"/b?x=1,2"' in out.read_bytes()


def test_formula_injection_is_defused(tmp_path: Path) -> None:
    evil = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1)", "\t=1", "\r=1"]
    exs = [make_exchange(host=h, target="/" + h, method=h, client=h) for h in evil]
    src = write_session(tmp_path / "s.ngxs", exs)
    out = tmp_path / "s.csv"
    export(src, "csv", out, redact=False)
    for row in rows(out)[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert {r[COLUMNS.index("host")] for r in rows(out)[1:]} == {"'" + h for h in evil}
    assert safe_cell("/ok") == "/ok" and safe_cell("=x") == "'=x"


def test_multiline_and_unicode_cells(tmp_path: Path) -> None:
    ex = make_exchange(host="東京.example", error="line one\nline two")
    src = write_session(tmp_path / "s.ngxs", [ex])
    out = tmp_path / "s.csv"
    export(src, "csv", out)
    row = rows(out)[1]
    assert row[COLUMNS.index("host")] == "東京.example"
    assert row[COLUMNS.index("error")] == "line one\nline two"
