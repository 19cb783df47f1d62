"""Marking rows and noting them in the window: tint, tooltip, filter, detail pane, save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from factories import make_exchange
from ngxscope.ui.menus import cell_menu
from ngxscope.ui.tablemodel import MARK_COLORS


def test_mark_and_note_rows(window: Any, qtbot: Any, monkeypatch: Any, shots: Path) -> None:
    rows = [make_exchange() for _ in range(4)]
    window.load(rows)
    window.table.selectRow(1)
    menu = cell_menu(window, window.proxy.index(1, 3))
    mark = next(a for a in menu.actions() if a.text() == "Mark").menu()
    next(a for a in mark.actions() if a.text() == "Red").trigger()
    assert rows[1].mark == "red"
    tint = window.proxy.index(1, 3).data(Qt.ItemDataRole.BackgroundRole)
    assert tint == MARK_COLORS["red"]
    monkeypatch.setattr("ngxscope.ui.menus.QInputDialog.getMultiLineText",
                        lambda *a, **k: ("  flaky upstream, see ticket 42 ", True))
    next(a for a in menu.actions() if a.text() == "Note…").trigger()
    assert rows[1].note == "flaky upstream, see ticket 42"
    assert "ticket 42" in window.proxy.index(1, 4).data(Qt.ItemDataRole.ToolTipRole)
    assert "ticket 42" in window.detail.conn_labels["Note"].text()
    window.set_mark([rows[3]], "green")
    window.filter_bar.set_text("marked")
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 2, timeout=3000)
    window.set_mark([rows[3]], "")
    assert window.proxy.rowCount() == 1, "the filter follows a changed mark"
    window.filter_bar.set_text("note~*TICKET")
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 1, timeout=3000)
    window.filter_bar.set_text("")
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 4, timeout=3000)
    window.set_mark([rows[2]], "yellow")
    window.set_mark([rows[0]], "blue")
    window.resize(1300, 700)
    window.table.selectRow(1)
    window.detail.parentWidget().hide()  # room for the rows in the picture
    window.table.scrollToTop()
    qtbot.wait(50)
    assert window.table.grab().save(str(shots / "marks-notes.png"))
    window.detail.parentWidget().show()
