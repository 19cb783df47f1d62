"""Side panels: per-worker table + plot, lifecycle events (the Upstreams panel: upstreams.py)."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QSplitter,
    QTableWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import LifecycleEvent
from ngxscope.store.aggregate import Aggregator

from .graphs import steady, style_plot, time_span
from .paneltable import panel_table, set_cell
from .tablemodel import STATUS_COLORS, fmt_ms
from .upstreams import UpstreamsPanel

__all__ = ["EVENT_KINDS", "EventsLog", "UpstreamsPanel", "WorkersPanel", "describe_event"]

WORKER_COLORS = ("#2f7fc1", "#2e9d4f", "#d9822b", "#9b59b6", "#d64545", "#16a085",
                 "#7f8c8d", "#c0392b")


def _table(headers: list[str]) -> QTableWidget:
    t = panel_table(headers)
    t.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(False)
    return t


def _set_row(table: QTableWidget, row: int, cells: list[str], colors: dict[int, QColor]) -> None:
    for col, text in enumerate(cells):
        item = set_cell(table, row, col, text, right=col > 0)
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
        self._colors_used = 0
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
            end = agg.end_second()
            secs = np.arange(end - window_s + 1, end + 1, dtype=float)
            for r in rows:
                key = agg.workers[r.pid]
                y = agg.key_series(key, window_s).astype(float)
                curve = self.curves.get(r.pid)
                if curve is None:
                    # by order of appearance: a pid keeps its colour when others come and go
                    color = WORKER_COLORS[self._colors_used % len(WORKER_COLORS)]
                    self._colors_used += 1
                    curve = self.plot.plot([], [], pen=pg.mkPen(color, width=1.5),
                                           name=str(r.pid))
                    self.curves[r.pid] = curve
                    style_plot(self.plot, self.palette())  # colour the new legend entry
                curve.setData(secs, y)  # complete seconds only (see Aggregator.clock)
                live.add(r.pid)
            item = self.plot.getPlotItem()
            item.setXRange(*time_span(agg.first, float(secs[-1]), window_s), padding=0.01)
            top = max((float(c.yData.max()) for c in self.curves.values()
                       if c.yData is not None and len(c.yData)), default=1.0)
            item.setYRange(0, max(1.0, top) * 1.1, padding=0)
        for pid in list(self.curves):
            if pid not in live:
                curve = self.curves.pop(pid)
                self.plot.removeItem(curve)
                self.legend.removeItem(curve)


EVENT_KINDS: dict[str, tuple[str, str]] = {
    "attach": ("attached", "#2e9d4f"),
    "detach": ("detached", "#6b7280"),
    "worker-start": ("worker started", "#2f7fc1"),
    "worker-exit": ("worker exited", "#d9822b"),
    "reload": ("reload", "#2f7fc1"),
    "binary-upgrade": ("binary upgrade", "#9b59b6"),
    "lost-events": ("events lost", "#d64545"),
    "config": ("configuration", "#6b7280"),
    "ngxscope": ("ngxscope", "#6b7280"),
}
"""Event kind → (label, colour) in the Events dock."""


def describe_event(ev: LifecycleEvent) -> str:
    """One sentence for the status bar ("nginx worker 1234 started (forked by 1200)")."""
    pid = f" {ev.pid}" if ev.pid else ""
    detail = f" ({ev.detail})" if ev.detail else ""
    text = {
        "worker-start": f"nginx worker{pid} started",
        "worker-exit": f"nginx worker{pid} exited",
        "attach": "capture attached",
        "detach": "capture detached",
        "reload": f"nginx{pid} reloaded its configuration",
        "binary-upgrade": f"nginx{pid} binary upgrade",
        "lost-events": "capture events lost: some requests may be missing",
    }.get(ev.kind, f"{ev.kind}{pid}")
    return f"{text}{detail}"


class EventsLog(QTreeWidget):
    """Lifecycle events (workers starting/exiting, reloads, attach/detach, lost events)."""

    COLUMNS = ["Time", "Event", "PID", "Detail"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(self.COLUMNS)
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for col, width in enumerate((90, 120, 70)):
            self.setColumnWidth(col, width)
        self.header().setStretchLastSection(True)
        self._bold = QFont()
        self._bold.setBold(True)
        self.max_rows = 2000

    def _add(self, ts: float, kind: str, pid: int, detail: str) -> None:
        label, color = EVENT_KINDS.get(kind, (kind, "#6b7280"))
        stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
        item = QTreeWidgetItem([stamp, label, str(pid) if pid else "", detail])
        item.setForeground(1, QColor(color))
        item.setFont(1, self._bold)
        item.setToolTip(3, detail)
        self.addTopLevelItem(item)
        while self.topLevelItemCount() > self.max_rows:
            self.takeTopLevelItem(0)
        self.scrollToItem(item)

    def add_events(self, events: list[LifecycleEvent]) -> None:
        for ev in events:
            self._add(ev.ts, ev.kind, ev.pid, ev.detail)

    def note(self, text: str) -> None:
        """A line from ngxscope itself (capture started/stopped)."""
        self._add(time.time(), "ngxscope", 0, text)

    def toPlainText(self) -> str:
        """Every row as text, one per line (for tests and copying)."""
        rows = []
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            if item is not None:
                rows.append("  ".join(item.text(c) for c in range(4)).rstrip())
        return "\n".join(rows)
