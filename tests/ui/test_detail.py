"""Body decoding and the detail pane (chunked + gzip + JSON, binary hex, notices)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ngxscope.pipeline.synthetic import chunked, sample_exchange
from ngxscope.store.bodies import dechunk, decompress, hexdump, render_body
from ngxscope.ui.detail import DetailPane
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
    assert [r.label.split()[0] for r in rows] == ["client", "nginx", "upstream", "#1", "#2"]
    assert [r.level for r in rows] == [0, 1, 1, 2, 2]
    assert "502" in rows[3].label and "keepalive" in rows[4].note
    for row in rows:
        for s in row.segments:
            assert -1e-6 <= s.start <= s.end <= ex.duration_ms + 1e-6
    # nginx's own time is the total minus the upstream envelope (first attempt → last end)
    own = sum(s.end - s.start for s in rows[1].segments)
    up = rows[2].segments[0]
    assert abs(own + (up.end - up.start) - ex.duration_ms) < 1e-6
    spans = [(min(s.start for s in r.segments), max(s.end for s in r.segments)) for r in rows[3:]]
    assert spans[0][1] == spans[1][0]  # the failed attempt lasted until the retry began
    assert (spans[0][0], spans[-1][1]) == (up.start, up.end)
    static = sample_exchange()
    static.upstream = []
    rows = waterfall_rows(static)
    assert [r.label for r in rows] == ["client request", "nginx"]
    assert "nginx itself" in rows[1].note


def test_upstream_tab_shows_rewritten_heads(qtbot) -> None:  # type: ignore[no-untyped-def]
    from ngxscope.ui.upstreamdetail import head_changes

    ex = sample_exchange()
    ex.request_headers = [("Host", "shop.example.com"), ("Connection", "keep-alive"),
                          ("Accept", "*/*")]
    ex.upstream[1].request_head = ("POST /api/v1/cart HTTP/1.1\r\nHost: backend\r\n"
                                   "X-Real-IP: 10.1.2.3\r\nAccept: */*")
    ex.upstream[1].response_head = "HTTP/1.1 200 OK\r\nContent-Type: application/json"
    marks, dropped = head_changes(ex, ex.upstream[1].request_head)
    assert marks == {"host": "changed", "x-real-ip": "added"} and dropped == ["Connection"]
    pane = DetailPane()
    qtbot.addWidget(pane)
    assert pane.placeholder.isVisibleTo(pane) and "Select a request" in pane.placeholder.text()
    pane.show_exchange(ex)
    assert not pane.placeholder.isVisibleTo(pane)
    assert pane.tabText(pane.upstream_tab) == "Upstream (2)"
    text = pane.upstream.toPlainText()
    assert "X-Real-IP: 10.1.2.3" in text and "+ added" in text and "~ changed" in text
    assert "not passed on: Connection" in text and "HTTP/1.1 200 OK" in text
    assert "moved on to the next peer" in text  # the first attempt was retried


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
    pane.setCurrentIndex(pane.upstream_tab)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-upstream.png"))
    pane.setCurrentIndex(4)
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


def test_summary_only_exchange_says_why_it_has_no_payload(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    pane = DetailPane()
    qtbot.addWidget(pane)
    ex = replace(sample_exchange(), request_headers=[], response_headers=[], request_body=b"",
                 response_body=b"", upstream=[], error=None, summary_only=True, truncated=True)
    pane.related_lookup = lambda _c: [ex]
    pane.resize(1000, 560)
    pane.show()
    pane.show_exchange(ex)
    assert "payload not captured" in pane.conn_labels["Error"].text()
    pane.show_exchange(replace(ex, summary_only=False))
    assert pane.conn_labels["Error"].text() == "\u2013"
    pane.show_exchange(ex)
    pane.setCurrentIndex(4)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-summary-only.png"))


def test_proxy_protocol_client_beside_the_socket_peer(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    pane = DetailPane()
    qtbot.addWidget(pane)
    ex = replace(sample_exchange(), client="127.0.0.1:51234", proxy_client="[2001:db8::7]:40002")
    pane.related_lookup = lambda _c: [ex]
    pane.resize(1000, 560)
    pane.show()
    pane.show_exchange(ex)
    text = pane.conn_labels["Client"].text()
    assert text.startswith("[2001:db8::7]:40002") and "socket peer 127.0.0.1:51234" in text
    pane.show_exchange(replace(ex, proxy_client=None))
    assert pane.conn_labels["Client"].text() == "127.0.0.1:51234"
    pane.show_exchange(ex)
    pane.setCurrentIndex(4)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-proxy-client.png"))


def test_realip_clock_and_subrequest_attempts_shown(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """realip's client beside the socket peer, nginx's $msec, the subrequests' attempts apart
    from the request's own, and a "no live upstreams" attempt named by its group."""
    from dataclasses import replace

    from ngxscope.model import UpstreamAttempt

    pane = DetailPane()
    qtbot.addWidget(pane)
    base = sample_exchange()
    own = [replace(base.upstream[0], status=502, response_head=None, response_bytes=0),
           UpstreamAttempt("backend", status=502, duration_ms=0.0, group="backend")]
    sub = UpstreamAttempt("10.0.0.9:9000", status=200, duration_ms=3.0, group="auth",
                          request_head="GET /auth HTTP/1.0\r\nHost: auth", response_head="HTTP/1.1 200 OK")
    ex = replace(base, client="127.0.0.1:51234", remote="192.0.2.7", nginx_end=round(base.end, 3) - 0.001,
                 nginx_ms=12.0, upstream=own, subrequest_upstream=[sub], status=502)
    pane.related_lookup = lambda _c: [ex]
    pane.resize(1000, 620)
    pane.show()
    pane.show_exchange(ex)
    lab = pane.conn_labels
    assert lab["Client"].text().startswith("192.0.2.7 ") and "socket peer 127.0.0.1:51234" in lab["Client"].text()
    assert f"$msec {ex.nginx_end:.3f}" in lab["nginx clock"].text()
    assert "$request_time 0.012 s" in lab["nginx clock"].text()
    assert pane.tabText(pane.upstream_tab) == "Upstream (2 + 1 sub)"
    text = pane.upstream.toPlainText()
    assert "No live upstreams" in text and "Subrequests' attempts (1)" in text
    assert text.index("#2 backend") < text.index("Subrequests") < text.index("#1 10.0.0.9:9000")
    pane.setCurrentIndex(4)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-realip-clock.png"))
    pane.setCurrentIndex(pane.upstream_tab)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-upstream-subrequests.png"))
    pane.show_exchange(replace(ex, remote=None, nginx_end=None, nginx_ms=None, subrequest_upstream=[]))
    assert lab["Client"].text() == "127.0.0.1:51234" and lab["nginx clock"].text() == "\u2013"
    assert pane.tabText(pane.upstream_tab) == "Upstream (2)"


def test_nginx_attempts_and_redirect_shown(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """Attempts from nginx's own list say so, and an internal redirect to another group (" : "
    in nginx's lists) is marked where it happened; the table cell joins them as nginx does."""
    from dataclasses import replace

    from ngxscope.model import UpstreamAttempt
    from ngxscope.ui.tablemodel import _upstream

    pane = DetailPane()
    qtbot.addWidget(pane)
    base = sample_exchange()
    first = replace(base.upstream[0], status=404)
    second = UpstreamAttempt("unix:/run/app/fallback.sock", status=200, connect_ms=0.0, header_ms=1.0,
                             duration_ms=1.0, group="fallback", redirected=True,
                             request_head="GET /fallback HTTP/1.0\r\nHost: app", response_head="HTTP/1.1 200 OK")
    ex = replace(base, upstream=[first, second], upstream_via="nginx")
    pane.resize(1000, 620)
    pane.show()
    pane.show_exchange(ex)
    text = pane.upstream.toPlainText()
    assert "nginx's own list" in text and "then an internal redirect to another group" in text
    assert text.index("internal redirect (error_page") < text.index("#2 unix:/run/app/fallback.sock")
    assert _upstream(ex) == f"{first.addr} : unix:/run/app/fallback.sock"
    assert "rebuilt from the connections" in (pane.show_exchange(replace(ex, upstream_via="wire"))
                                               or pane.upstream.toPlainText())
    pane.show_exchange(ex)
    pane.setCurrentIndex(pane.upstream_tab)
    qtbot.wait(50)
    assert pane.grab().save(str(shots / "detail-upstream-redirect.png"))
