"""Side panels: per-worker table + plot, per-upstream-peer table, lifecycle events log."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import LifecycleEvent
from ngxscope.store.aggregate import Aggregator

from .graphs import steady, style_plot
from .tablemodel import STATUS_COLORS, fmt_bytes, fmt_ms

__all__ = ["EventsLog", "UpstreamsPanel", "WorkersPanel"]

WORKER_COLORS = ("#2f7fc1", "#2e9d4f", "#d9822b", "#9b59b6", "#d64545", "#16a085",
                 "#7f8c8d", "#c0392b")


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    t.verticalHeader().setDefaultSectionSize(22)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setAlternatingRowColors(True)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(False)
    return t


def _set_row(table: QTableWidget, row: int, cells: list[str], colors: dict[int, QColor]) -> None:
    for col, text in enumerate(cells):
        item = table.item(row, col)
        if item is None:
            item = QTableWidgetItem()
            if col > 0:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(row, col, item)
        if item.text() != text:
            item.setText(text)
        if col in colors:
            item.setForeground(colors[col])


class WorkersPanel(QWidget):
    """Per-worker counters and a small req/s plot per pid."""

    HEADERS = ["Worker", "Requests", "req/s", "2xx", "3xx", "4xx", "5xx", "p50", "p95", "p99"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = _table(self.HEADERS)
        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        item = self.plot.getPlotItem()
        item.setTitle("req/s per worker", size="9pt")
        item.setLabel("left", "req/s")
        item.setDownsampling(auto=True, mode="peak")
        item.setClipToView(True)
        item.hideButtons()
        item.setMenuEnabled(False)
        item.disableAutoRange()
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMinimumHeight(110)
        steady(self.plot)
        self.legend = item.addLegend(offset=(4, 4), colCount=4)
        self.curves: dict[int, pg.PlotDataItem] = {}
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.plot)
        split.setSizes([560, 440])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split)
        style_plot(self.plot, self.palette())

    def refresh(self, agg: Aggregator, window_s: int = 120) -> None:
        rows = agg.worker_rows()
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            cells = [str(r.pid), f"{r.requests:,}", f"{r.rate:,.1f}", *(
                f"{c:,}" for c in r.classes[1:5]), fmt_ms(r.p50), fmt_ms(r.p95), fmt_ms(r.p99)]
            _set_row(self.table, i, cells, {3 + k: STATUS_COLORS[1 + k] for k in range(4)})
        live = set()
        if agg.latest is not None:
            secs = np.arange(agg.latest - window_s + 1, agg.latest + 1, dtype=float)
            for n, r in enumerate(rows):
                key = agg.workers[r.pid]
                y = agg.key_series(key, window_s).astype(float)
                curve = self.curves.get(r.pid)
                if curve is None:
                    color = WORKER_COLORS[n % len(WORKER_COLORS)]
                    curve = self.plot.plot([], [], pen=pg.mkPen(color, width=1.5),
                                           name=str(r.pid))
                    self.curves[r.pid] = curve
                    style_plot(self.plot, self.palette())  # colour the new legend entry
                # the newest second is still filling: leave it out
                curve.setData(secs[:-1], y[:-1])
                live.add(r.pid)
            item = self.plot.getPlotItem()
            item.setXRange(float(secs[0]), float(secs[-2]), padding=0.01)
            top = max((float(c.yData.max()) for c in self.curves.values()
                       if c.yData is not None and len(c.yData)), default=1.0)
            item.setYRange(0, max(1.0, top) * 1.1, padding=0)
        for pid in list(self.curves):
            if pid not in live:
                curve = self.curves.pop(pid)
                self.plot.removeItem(curve)
                self.legend.removeItem(curve)


class UpstreamsPanel(QWidget):
    """Per-upstream-peer table; clicking a peer asks for the filter `upstream=ADDR`."""

    peer_clicked = Signal(str)
    HEADERS = ["Peer", "Requests", "req/s", "2xx", "3xx", "4xx", "5xx", "Errors", "p50",
               "p95", "p99", "hdr p95", "Sent", "Received"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = _table(self.HEADERS)
        self.table.cellClicked.connect(self._clicked)
        self.table.setToolTip("Click a peer to filter the requests it served")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.table)
        self.addrs: list[str] = []

    def _clicked(self, row: int, _col: int) -> None:
        if 0 <= row < len(self.addrs):
            self.peer_clicked.emit(self.addrs[row])

    def refresh(self, agg: Aggregator) -> None:
        rows = agg.peer_rows()
        self.addrs = [r.addr for r in rows]
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            cells = [r.addr, f"{r.requests:,}", f"{r.rate:,.1f}",
                     *(f"{c:,}" for c in r.classes[1:5]),
                     f"{r.errors:,} ({r.error_rate:.1%})", fmt_ms(r.p50), fmt_ms(r.p95),
                     fmt_ms(r.p99), fmt_ms(r.header_p95), fmt_bytes(r.bytes_sent),
                     fmt_bytes(r.bytes_received)]
            colors = {3 + k: STATUS_COLORS[1 + k] for k in range(4)}
            if r.error_rate > 0.05:
                colors[7] = STATUS_COLORS[4]
            _set_row(self.table, i, cells, colors)


class EventsLog(QPlainTextEdit):
    """Lifecycle events (worker started/exited, attach, lost events), newest last."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(2000)
        self.setPlaceholderText("Lifecycle events (workers starting/exiting, lost events) "
                                "appear here.")

    def add_events(self, events: list[LifecycleEvent]) -> None:
        for ev in events:
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.ts))
            pid = f" pid {ev.pid}" if ev.pid else ""
            self.appendPlainText(f"{stamp}  {ev.kind:<13}{pid}  {ev.detail}".rstrip())

    def note(self, text: str) -> None:
        self.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")
