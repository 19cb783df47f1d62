"""The read-only tables of the side panels (Routes, Slowest, Workers, TLS): how one is set
up, how a cell is filled in place, and the panel holding one table that recomputes from the
store at most every `REFRESH_S` (its refresh runs on the UI thread)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import Exchange
from ngxscope.store.memory import ExchangeStore

__all__ = ["MAX_ROWS", "REFRESH_S", "TablePanel", "panel_table", "recent", "set_cell"]

MAX_ROWS = 50_000
"""The newest exchanges a panel looks at, at most: its refresh runs on the UI thread."""

REFRESH_S = 2.0
"""A panel recomputes at most this often."""

RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


def recent(store: ExchangeStore, start: float) -> Iterator[Exchange]:
    """The newest exchanges back to `start`, `MAX_ROWS` at most (the store is in arrival
    order: stop a little past `start`, as completion and arrival order differ by moments)."""
    for i in range(len(store) - 1, max(-1, len(store) - 1 - MAX_ROWS), -1):
        ex = store[i]
        if ex.end < start - 5.0:
            return
        yield ex


def panel_table(headers: Sequence[str], widths: Sequence[int] = (), *,
                alternate: bool = True, row_height: int = 22) -> QTableWidget:
    """A read-only, row-selecting table with these headers, interactive column widths and
    the last column stretched (callers change what differs)."""
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(list(headers))
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(row_height)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setAlternatingRowColors(alternate)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    t.horizontalHeader().setStretchLastSection(True)
    for col, width in enumerate(widths):
        t.setColumnWidth(col, width)
    return t


def set_cell(table: QTableWidget, row: int, col: int, text: str, *, right: bool) -> QTableWidgetItem:
    """The item at (row, col), made on first use (right-aligned if `right`), showing `text`
    (set only when it changed: a refresh rewrites every cell)."""
    item = table.item(row, col)
    if item is None:
        item = QTableWidgetItem()
        if right:
            item.setTextAlignment(RIGHT)
        table.setItem(row, col, item)
    if item.text() != text:
        item.setText(text)
    return item


class TablePanel(QWidget):
    """A side panel that is one table (`self.table`), refreshed at most every `REFRESH_S`;
    subclasses handle `_clicked` and fill the table when `_due()`."""

    def __init__(self, headers: Sequence[str], widths: Sequence[int],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = panel_table(headers, widths)
        self.table.itemClicked.connect(self._clicked)
        self._refreshed = -REFRESH_S
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.table)

    def _clicked(self, item: QTableWidgetItem) -> None:
        """A row was clicked (nothing by default)."""

    def _due(self) -> bool:
        """True (and the clock restarted) when the last refresh is `REFRESH_S` old."""
        if time.monotonic() - self._refreshed < REFRESH_S:
            return False
        self._refreshed = time.monotonic()
        return True
