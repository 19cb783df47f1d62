"""The Routes panel: request paths collapsed into route templates (`store.routes`), per
template over the last minute: req/s with a sparkline, error rate, p50/p95/p99, bytes and
the share that went upstream. Clicking a route asks for the filter matching its paths
(`route_clicked`). Templates come from the heuristic and the user's routes file."""

from __future__ import annotations

import logging

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QTableWidgetItem, QWidget

from ngxscope.store.filterexpr import quote_value
from ngxscope.store.memory import ExchangeStore
from ngxscope.store.routes import RouteError, RouteTemplater, load_route_file
from ngxscope.store.routestats import RouteRow, route_regex, route_rows

from .paneltable import REFRESH_S, TablePanel, recent, set_cell
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


def user_templater() -> RouteTemplater:
    """The heuristic with the user's routes file first (a bad file is logged and ignored)."""
    try:
        return RouteTemplater(load_route_file())
    except RouteError as exc:
        log.warning("routes file ignored: %s", exc)
        return RouteTemplater()


class RoutesPanel(TablePanel):
    """Route templates of the last minute; clicking one asks for `path~REGEX`."""

    route_clicked = Signal(str)

    def __init__(self, templater: RouteTemplater | None = None, parent: QWidget | None = None) -> None:
        super().__init__(HEADERS, COL_WIDTHS, parent)
        self.templater = templater or user_templater()
        self.table.setItemDelegateForColumn(SPARK_COL, SparklineDelegate(self.table))
        self.rows: list[RouteRow] = []

    def _clicked(self, item: QTableWidgetItem) -> None:
        row = item.row()
        if 0 <= row < len(self.rows):
            rx = route_regex(self.rows[row].template)
            if rx is not None:
                self.route_clicked.emit(f"path~{quote_value(rx)}")

    def refresh(self, store: ExchangeStore, end: float) -> None:
        """Recompute from the exchanges of the last minute up to `end` (unix time)."""
        if not self._due():
            return
        self.rows = route_rows(recent(store, end - WINDOW_S), self.templater, end, WINDOW_S)
        t = self.table
        t.setRowCount(len(self.rows))
        red = STATUS_COLORS[4]
        for i, r in enumerate(self.rows):
            cells = [set_cell(t, i, col, text, right=col > 0)
                     for col, text in enumerate(route_cells(r))]
            cells[4].setForeground(red if r.errors else t.palette().text())
            cells[SPARK_COL].setData(SPARK_ROLE, [float(v) for v in r.spark])
            cells[0].setToolTip(f"{r.template}\nclick: show its requests")
