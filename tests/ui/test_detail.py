"""Body decoding and the detail pane (chunked + gzip + JSON, binary hex, notices)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ngxscope.ui.bodies import dechunk, decompress, hexdump, render_body
from ngxscope.ui.detail import DetailPane
from ngxscope.ui.synthetic import chunked, sample_exchange
from ngxscope.ui.waterfall import waterfall_rows

DOC = {"items": [{"id": 1, "name": "lamp"}], "ok": True}


def test_dechunk_complete_and_cut() -> None:
    body = b"hello world, " * 20
    assert dechunk(chunked(body, 7)) == (body, True)
    part, complete = dechunk(chunked(body, 7)[:50])
    assert not complete and body.startswith(part)
    assert dechunk(b"zz\r\nxx") == (b"", False)
    assert dechunk(b"5;ext=1\r\nhello\r\n0\r\n\r\n") == (b"hello", True)


def test_decompress_gzip_deflate_and_problems() -> None:
    raw = json.dumps(DOC).encode()
    assert decompress(gzip.compress(raw), "gzip") == (raw, None)
    import zlib

    assert decompress(zlib.compress(raw), "deflate")[0] == raw
    _cut, problem = decompress(gzip.compress(raw * 50)[:40], "gzip")
    assert problem and "incomplete" in problem
    assert "not decoded" in (decompress(raw, "br")[1] or "")
    assert "cannot decompress" in (decompress(b"garbage", "gzip")[1] or "")


def test_render_chunked_gzip_json() -> None:
    wire = chunked(gzip.compress(json.dumps(DOC).encode()), 16)
    hdrs = [("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip"),
            ("Content-Type", "application/json")]
    r = render_body(wire, hdrs, wire_size=len(wire))
    assert r.kind == "json"
    assert json.loads(r.text) == DOC and "\n  " in r.text
    assert any("de-chunked" in n for n in r.notes) and any("gzip" in n for n in r.notes)


def test_render_binary_truncated_sendfile_text() -> None:
    png = bytes(range(256))
    r = render_body(png[:100], [("Content-Type", "image/png")], wire_size=256)
    assert r.kind == "hex" and r.text.startswith("00000000  00 01 02")
    assert any("truncated: 100 of 256 bytes captured" in n for n in r.notes)
    r = render_body(b"", [], wire_size=5000, sendfile_bytes=5000)
    assert r.kind == "empty" and any("sendfile: not captured" in n for n in r.notes)
    r = render_body(b"plain text \xc3\xa9", [("Content-Type", "text/plain")], wire_size=13)
    assert r.kind == "text" and "é" in r.text and not r.notes
    assert hexdump(b"A" * 40, limit=16).endswith("24 more bytes")


def test_waterfall_rows_cover_attempts() -> None:
    ex = sample_exchange()
    rows = waterfall_rows(ex)
    assert [r[0].split()[0] for r in rows] == ["request", "#1", "#2", "response"]
    assert "502" in rows[1][0] and "reused" in rows[2][0]
    for _label, segs, _note in rows:
        for s in segs:
            assert -1e-6 <= s.start <= s.end <= ex.duration_ms + 1e-6


def test_detail_pane_renders_and_screenshot(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    pane = DetailPane()
    qtbot.addWidget(pane)
    ex = sample_exchange()
    pane.related_lookup = lambda _c: [ex]
    pane.resize(1000, 560)
    pane.show()
    pane.show_exchange(ex)
    body = pane.response.body.toPlainText()
    assert json.loads(body)["items"][0]["name"] == "item-0"
    assert "de-chunked" in pane.response.notes.text()
    assert pane.response.headers.rowCount() == len(ex.response_headers)
    assert "POST /api/v1/cart" in pane.request.start_line.text()
    assert pane.conn_labels["Worker"].text() == f"pid {ex.pid}"
    assert pane.related.rowCount() == 1
    pane.setCurrentIndex(1)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-response.png"))
    pane.setCurrentIndex(2)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-timing.png"))
    pane.setCurrentIndex(3)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-connection.png"))

    binary = sample_exchange("binary")
    pane.show_exchange(binary)
    assert pane.response.body.toPlainText().startswith("00000000  89 50 4e 47")
    assert "hex view" in pane.response.notes.text()
    pane.setCurrentIndex(1)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-binary.png"))
    pane.show_exchange(None)
    assert pane.response.body.toPlainText() == ""
