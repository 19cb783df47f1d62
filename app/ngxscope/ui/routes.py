"""The Routes panel: request paths collapsed into route templates (`store.routes`), per
template over the last minute: req/s with a sparkline, error rate, p50/p95/p99, bytes and
the share that went upstream. Clicking a route asks for the filter matching its paths
(`route_clicked`). Templates come from the heuristic and the user's routes file."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

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
from ngxscope.store.filterexpr import quote_value
from ngxscope.store.memory import ExchangeStore
from ngxscope.store.routes import RouteError, RouteTemplater, load_route_file
from ngxscope.store.routestats import RouteRow, route_regex, route_rows

from .tablemodel import STATUS_COLORS, fmt_bytes, fmt_ms
from .upstreams import SPARK_ROLE, SparklineDelegate

__all__ = ["REFRESH_S", "RoutesPanel", "recent", "route_cells", "user_templater"]

log = logging.getLogger(__name__)

WINDOW_S = 60
HEADERS = ["Route", f"Last {WINDOW_S} s", "req/s", "Requests", "Errors", "p50", "p95", "p99", "Bytes",
           "Upstream"]
SPARK_COL = 1
COL_WIDTHS = (260, 110, 60, 70, 80, 62, 62, 62, 72, 68)


def route_cells(r: RouteRow) -> list[str]:
    """The text of every column but the sparkline."""
    return [r.template, "", f"{r.rate:,.1f}", f"{r.requests:,}",
            f"{r.errors:,} ({r.error_rate:.0%})" if r.errors else "0",
            fmt_ms(r.p50), fmt_ms(r.p95), fmt_ms(r.p99), fmt_bytes(r.response_bytes),
            f"{r.upstream_share:.0%}"]


MAX_ROWS = 50_000
"""The newest exchanges a panel looks at, at most: its refresh runs on the UI thread."""

REFRESH_S = 2.0
"""A panel recomputes at most this often."""


def recent(store: ExchangeStore, start: float) -> Iterator[Exchange]:
    """The newest exchanges back to `start`, `MAX_ROWS` at most (the store is in arrival
    order: stop a little past `start`, as completion and arrival order differ by moments)."""
    for i in range(len(store) - 1, max(-1, len(store) - 1 - MAX_ROWS), -1):
        ex = store[i]
        if ex.end < start - 5.0:
            return
        yield ex


def user_templater() -> RouteTemplater:
    """The heuristic with the user's routes file first (a bad file is logged and ignored)."""
    try:
        return RouteTemplater(load_route_file())
    except RouteError as exc:
        log.warning("routes file ignored: %s", exc)
        return RouteTemplater()


class RoutesPanel(QWidget):
    """Route templates of the last minute; clicking one asks for `path~REGEX`."""

    route_clicked = Signal(str)

    def __init__(self, templater: RouteTemplater | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.templater = templater or user_templater()
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
        t.setItemDelegateForColumn(SPARK_COL, SparklineDelegate(t))
        t.itemClicked.connect(self._clicked)
        self.rows: list[RouteRow] = []
        self._refreshed = -REFRESH_S
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(t)

    def _clicked(self, item: QTableWidgetItem) -> None:
        row = item.row()
        if 0 <= row < len(self.rows):
            rx = route_regex(self.rows[row].template)
            if rx is not None:
                self.route_clicked.emit(f"path~{quote_value(rx)}")

    def refresh(self, store: ExchangeStore, end: float) -> None:
        """Recompute from the exchanges of the last minute up to `end` (unix time)."""
        if time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        self.rows = route_rows(recent(store, end - WINDOW_S), self.templater, end, WINDOW_S)
        t = self.table
        t.setRowCount(len(self.rows))
        red = STATUS_COLORS[4]
        for i, r in enumerate(self.rows):
            cells: list[QTableWidgetItem] = []
            for col, text in enumerate(route_cells(r)):
                item = t.item(i, col)
                if item is None:
                    item = QTableWidgetItem()
                    if col > 0:
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    t.setItem(i, col, item)
                item.setText(text)
                if col == 4:
                    item.setForeground(red if r.errors else t.palette().text())
                cells.append(item)
            cells[SPARK_COL].setData(SPARK_ROLE, [float(v) for v in r.spark])
            cells[0].setToolTip(f"{r.template}\nclick: show its requests")
