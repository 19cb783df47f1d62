"""The Slowest panel: requests at or above the p99 of their own route, and upstream attempts
at or above the p99 of their own peer (`store.slowest`), over the last five minutes, with
the phase that took longest. Clicking one shows it in the detail pane's Timing tab, whose
waterfall explains where the time went (`exchange_clicked`)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QTableWidgetItem, QWidget

from ngxscope.model import Exchange
from ngxscope.store.memory import ExchangeStore
from ngxscope.store.routes import RouteTemplater
from ngxscope.store.slowest import SlowRow, slowest

from .paneltable import TablePanel, recent, set_cell
from .tablemodel import STATUS_COLORS, _status_cls, fmt_ms

__all__ = ["SlowestPanel"]

WINDOW_S = 300
HEADERS = ["Duration", "\u00d7 p99", "p99", "Of", "Route / peer", "Status", "Path", "Where the time went"]
COL_WIDTHS = (76, 54, 66, 48, 190, 52, 230, 200)


class SlowestPanel(TablePanel):
    """Outliers against their own route or peer; clicking one asks to show it."""

    exchange_clicked = Signal(object)

    def __init__(self, templater: RouteTemplater, parent: QWidget | None = None) -> None:
        super().__init__(HEADERS, COL_WIDTHS, parent)
        self.templater = templater
        self.rows: list[SlowRow] = []

    def _clicked(self, item: QTableWidgetItem) -> None:
        if 0 <= item.row() < len(self.rows):
            self.exchange_clicked.emit(self.rows[item.row()].ex)

    def refresh(self, store: ExchangeStore, end: float) -> None:
        """Recompute from the exchanges of the last five minutes up to `end`."""
        if not self._due():
            return
        xs: list[Exchange] = [e for e in recent(store, end - WINDOW_S) if e.end <= end]
        self.rows = slowest(xs, self.templater)
        t = self.table
        t.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            e = r.ex
            cells = [fmt_ms(r.ms), f"{r.ratio:.1f}\u00d7", fmt_ms(r.p99), r.kind, r.key,
                     str(e.status) if e.status is not None else "-", e.target, r.where]
            for col, text in enumerate(cells):
                item = set_cell(t, i, col, text, right=col < 3 or col == 5)
                if col == 5:
                    item.setForeground(STATUS_COLORS[_status_cls(e.status)])
