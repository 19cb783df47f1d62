"""The Slowest panel: requests at or above the p99 of their own route, and upstream attempts
at or above the p99 of their own peer (`store.slowest`), over the last five minutes, with
the phase that took longest. Clicking one shows it in the detail pane's Timing tab, whose
waterfall explains where the time went (`exchange_clicked`)."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
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
from ngxscope.store.routes import RouteTemplater
from ngxscope.store.slowest import SlowRow, slowest

from .routes import REFRESH_S, recent
from .tablemodel import STATUS_COLORS, _status_cls, fmt_ms

__all__ = ["SlowestPanel"]

WINDOW_S = 300
HEADERS = ["Duration", "\u00d7 p99", "p99", "Of", "Route / peer", "Status", "Path", "Where the time went"]
COL_WIDTHS = (76, 54, 66, 48, 190, 52, 230, 200)


class SlowestPanel(QWidget):
    """Outliers against their own route or peer; clicking one asks to show it."""

    exchange_clicked = Signal(object)

    def __init__(self, templater: RouteTemplater, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.templater = templater
        t = self.table = QTableWidget(0, len(HEADERS))
        t.setHorizontalHeaderLabels(HEADERS)
        t.verticalHeader().setVisible(False)
        t.verticalHeader().setDefaultSectionSize(22)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setAlternatingRowColors(True)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        t.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate(COL_WIDTHS):
            t.setColumnWidth(col, width)
        t.itemClicked.connect(self._clicked)
        self.rows: list[SlowRow] = []
        self._refreshed = -REFRESH_S
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(t)

    def _clicked(self, item: QTableWidgetItem) -> None:
        if 0 <= item.row() < len(self.rows):
            self.exchange_clicked.emit(self.rows[item.row()].ex)

    def refresh(self, store: ExchangeStore, end: float) -> None:
        """Recompute from the exchanges of the last five minutes up to `end`."""
        if time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        xs: list[Exchange] = [e for e in recent(store, end - WINDOW_S) if e.end <= end]
        self.rows = slowest(xs, self.templater)
        t = self.table
        t.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            e = r.ex
            cells = [fmt_ms(r.ms), f"{r.ratio:.1f}\u00d7", fmt_ms(r.p99), r.kind, r.key,
                     str(e.status) if e.status is not None else "-", e.target, r.where]
            for col, text in enumerate(cells):
                item = t.item(i, col)
                if item is None:
                    item = QTableWidgetItem()
                    if col < 3 or col == 5:
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    t.setItem(i, col, item)
                item.setText(text)
                if col == 5:
                    item.setForeground(STATUS_COLORS[_status_cls(e.status)])
