"""The TLS / Connections panel and the Connection tab's handshake timeline."""

from __future__ import annotations

from pathlib import Path

from factories import make_exchange
from ngxscope.store.aggregate import Aggregator
from ngxscope.ui.handshake import HandshakeTimeline, handshake_text, timeline_rows
from ngxscope.ui.tlspanel import TlsPanel, summary_text

T0 = 1_700_000_000.0


def _tls(conn: str, seq: int, **kw: object) -> object:
    base = dict(conn_id=conn, conn_seq=seq, tls=True, conn_start=T0, tcp_connect_ms=0.1,
                tls_handshake_ms=2.0, tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                sni="shop.test", alpn="h2", tls_resumed=False, retransmits=0,
                start=T0 + 0.003 + seq * 0.001, end=T0 + 0.0035 + seq * 0.001)
    base.update(kw)
    return make_exchange(**base)


def _batch() -> list:
    return [
        _tls("c1", 0), _tls("c1", 1),  # one connection, counted once
        _tls("c2", 0, tls_version="TLSv1.2", tls_cipher="ECDHE-RSA-AES128-GCM-SHA256", tls_resumed=True,
             tls_handshake_ms=60.0, sni=None, alpn=None),
        make_exchange(conn_id="", client="10.0.0.9:5000", tls=True, conn_start=T0, tcp_connect_ms=0.2,
                      sni="x.test", method="", target="", status=None, conn_outcome="tls-failed",
                      error="TLS handshake failed: server alert: protocol_version"),
    ]


def test_tally_counts_connections_once() -> None:
    agg = Aggregator()
    agg.feed(_batch())
    t = agg.conns
    assert (t.connections, t.tls, t.resumed) == (3, 2, 1)
    assert t.versions == {"TLSv1.3": 1, "TLSv1.2": 1}
    assert t.snis == {"shop.test": 1, "(none)": 1}
    assert t.failures == {"server alert: protocol_version": 1}
    assert t.failed_clients == {"10.0.0.9": 1}
    assert t.outcomes == {"tls-failed": 1}
    text = summary_text(t)
    assert "<b>3</b> connections" in text and "resumed <b>50 %</b>" in text


def test_panel_renders(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    agg = Aggregator()
    agg.feed(_batch())
    panel = TlsPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 330)
    panel.refresh(agg)
    panel.show()
    assert panel.tables["versions"].rowCount() == 2
    assert panel.tables["failures"].item(0, 0).text() == "server alert: protocol_version"
    qtbot.wait(50)
    assert panel.grab().save(str(shots / "tls-panel.png"))


def test_timeline_rows() -> None:
    batch = _batch()
    rows = timeline_rows(batch[1], batch[:2])
    assert [r.label.split("/")[0] for r in rows] == ["TCP connect", "TLS handshake", "#1 GET ", "#2 GET "]
    assert rows[0].end == 0.1 and rows[1].start == 0.1 and rows[1].end == 2.1
    assert rows[-1].bold and "TLSv1.3" in rows[1].note
    failed = timeline_rows(batch[3], [batch[3]])
    assert failed[-1].label == "TLS handshake" and "protocol_version" in failed[-1].note
    assert timeline_rows(make_exchange(), []) == []
    assert "SNI shop.test" in handshake_text(batch[0])


def test_timeline_widget(qtbot) -> None:  # type: ignore[no-untyped-def]
    w = HandshakeTimeline()
    qtbot.addWidget(w)
    batch = _batch()
    w.set_exchange(batch[0], batch[:2])
    assert len(w.rows) == 4 and w.minimumHeight() >= w.TOP + 4 * w.ROW_H
    w.resize(800, 140)
    w.grab()


def test_connection_tab_shows_the_handshake(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """The detail pane's Connection tab: the handshake timeline before the requests."""
    from ngxscope.ui.detail import DetailPane

    conn = [_tls("c9", i, tcp_connect_ms=0.41, tls_handshake_ms=3.2, retransmits=1,
                 start=T0 + 0.0045 + i * 0.0021, end=T0 + 0.0061 + i * 0.0021, target=f"/api/items/{i}")
            for i in range(3)]
    pane = DetailPane()
    qtbot.addWidget(pane)
    pane.related_lookup = lambda _c: conn
    pane.resize(1000, 560)
    pane.show()
    pane.show_exchange(conn[1])
    pane.setCurrentIndex(4)
    qtbot.wait(50)
    assert "TLSv1.3" in pane.conn_labels["Handshake"].text()
    assert pane.grab().save(str(shots / "detail-connection-handshake.png"))
