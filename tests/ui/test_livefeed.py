"""The window's live feed (ui/livefeed.py): pausing and sorting hold rows back and show them
again, and a helper that dies says why."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt

from ngxscope.pipeline.source import StreamSource
from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.ui.mainwindow import MainWindow
from ngxscope.ui.tablemodel import COLUMNS


def test_pause_resume_clear_and_selection(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    win: MainWindow = window
    win.set_source(SyntheticSource(2000, threaded=False))
    qtbot.waitUntil(lambda: len(win.store) > 50, timeout=3000)
    win.pause_action.trigger()
    assert win.paused and win.status.state_kind == "paused"
    n = len(win.store)
    qtbot.wait(300)
    assert len(win.store) == n and win._pending
    win.toggle_pause()
    assert not win.paused and len(win.store) > n and win.status.state_kind == "live"
    win.table.selectRow(0)
    ex = win.detail.exchange
    assert ex is not None and win.detail.conn_labels["Worker"].text() == f"pid {ex.pid}"
    win.clear()
    assert len(win.store) == 0 and win.agg.total == 0 and win.detail.exchange is None
    win.stop_capture()
    assert win.status.state_kind == "stopped"


def test_sorting_holds_live_rows_and_keeps_selection(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    win: MainWindow = window
    win.set_source(SyntheticSource(3000, threaded=False))
    qtbot.waitUntil(lambda: len(win.store) > 300, timeout=3000)
    win.table.selectRow(5)
    chosen = win.detail.exchange
    header = win.table.horizontalHeader()
    col = [c[0] for c in COLUMNS].index("duration")
    header.setSortIndicator(col, Qt.SortOrder.DescendingOrder)
    assert win.model.sorted
    durs = [win.proxy.exchange_at(win.proxy.index(r, 0)).duration_ms for r in range(50)]
    assert durs == sorted(durs, reverse=True)
    sel = win.table.selectionModel().currentIndex()
    assert win.proxy.exchange_at(sel) is chosen  # the selection followed its row
    n, total = len(win.store), win.agg.total
    qtbot.wait(400)
    assert len(win.store) == n and win._pending  # the table waits...
    assert win.agg.total > total  # ...the graphs do not
    assert "sorted by Duration" in win.status.state.text()
    win.filter_bar.set_text("tls")  # a filter change while rows are held back
    assert all(e.tls for e in win.visible_exchanges())
    win.filter_bar.set_text("")
    qtbot.wait(200)
    header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
    assert not win.model.sorted and not win._pending and len(win.store) > n
    assert win.agg.total == win.store.total
    assert win.status.state_kind == "live"


def test_helper_death_is_shown(window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "die.py"
    script.write_text("import sys; print('bpf: permission denied', file=sys.stderr); "
                      "sys.exit(1)\n")
    win: MainWindow = window
    win.set_source(StreamSource([sys.executable, str(script)], elevate_if_needed=False))
    qtbot.waitUntil(lambda: win.status.state_kind == "died", timeout=5000)
    assert "permission denied" in win.status.state.text()
    assert "permission denied" in win.events_log.toPlainText()
