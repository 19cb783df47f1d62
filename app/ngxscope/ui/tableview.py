"""The request table's view: its look and behaviour, and fitting the Upstream column.

`build_table` makes the QTableView over the filter proxy (the window connects its menus,
sorting and selection); `fit_upstream_column` widens the Upstream column when an exchange
with more attempts ("a, b" retries, as nginx's $upstream_addr prints them) arrives.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ngxscope.model import Exchange

from .tablemodel import COLUMN_KEYS, COLUMNS, DEFAULT_WIDTHS

__all__ = ["UPSTREAM_MAX_W", "build_table", "fit_upstream_column"]

UPSTREAM_MAX_W = 420
"""The Upstream column never grows wider than this by itself (the tooltip has it all)."""


def build_table(model: QAbstractItemModel) -> QTableView:
    """The live request table: row selection, no grid, movable columns, arrival order."""
    t = QTableView()
    t.setModel(model)
    t.setSortingEnabled(True)
    t.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # arrival order until a click
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    t.setAlternatingRowColors(True)
    t.setShowGrid(False)
    t.setWordWrap(False)
    t.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    t.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    vh = t.verticalHeader()
    vh.setVisible(False)
    vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    vh.setDefaultSectionSize(22)
    vh.setMinimumSectionSize(18)
    hh = t.horizontalHeader()
    hh.setSectionsMovable(True)
    hh.setSortIndicatorClearable(True)  # asc → desc → arrival order (live again)
    hh.setHighlightSections(False)
    hh.setStretchLastSection(False)
    hh.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    for i, col in enumerate(COLUMNS):
        t.setColumnWidth(i, DEFAULT_WIDTHS.get(col[0], 90))
    t.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    return t


def fit_upstream_column(table: QTableView, exchanges: list[Exchange], fitted: int) -> int:
    """Widen (never narrow) the Upstream column for the most attempts in `exchanges`.

    `fitted` is the attempt count the column already fits; returns the new one. Cheap: only
    the batch's attempt counts are looked at unless one exceeds `fitted`.
    """
    most = max((len(e.upstream) for e in exchanges[-5000:]), default=0)
    if most <= fitted:
        return fitted
    col = COLUMN_KEYS.index("upstream")
    sample = next(e for e in reversed(exchanges[-5000:]) if len(e.upstream) == most)
    text = COLUMNS[col][2](sample)
    need = min(UPSTREAM_MAX_W, table.fontMetrics().horizontalAdvance(text) + 18)
    if need > table.columnWidth(col):
        table.setColumnWidth(col, need)
    return most
