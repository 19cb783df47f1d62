"""The Slowest panel: outliers of their own route, click shows the waterfall; screenshot."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from factories import synthetic_history
from ngxscope.ui.mainwindow import MainWindow


def test_slowest_panel_rows_click_and_screenshot(qtbot, settings: QSettings, shots: Path) -> None:  # type: ignore[no-untyped-def]
    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.resize(1500, 900)
    win.show()
    history = synthetic_history(120, 120, seed=9)
    win.model.append_batch(history)
    win.agg.feed(history)
    win.docks["slowest"].raise_()
    qtbot.wait(100)
    win.refresh_panels()
    rows = win.slowest.rows
    assert rows and all(r.ms >= r.p99 for r in rows)
    assert {r.kind for r in rows} == {"route", "peer"}
    assert rows == sorted(rows, key=lambda r: (-r.ratio, -r.ms))
    qtbot.wait(200)
    assert win.docks["slowest"].grab().save(str(shots / "slowest-panel.png"))
    win.slowest.table.itemClicked.emit(win.slowest.table.item(0, 0))
    qtbot.wait(50)
    assert win.detail.exchange is rows[0].ex
    assert win.detail.currentWidget() is win.detail.timing
    assert win.grab().save(str(shots / "slowest-detail.png"))
