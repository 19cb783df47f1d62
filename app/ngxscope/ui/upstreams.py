"""The Upstreams panel: per upstream group and per peer, refreshed from `Aggregator`.

A tree: one row per `upstream NAME {}` group (its peers added up; "(unknown group)" when
the capture cannot name it) with one child row per peer: attempts, req/s with a 60 s
sparkline, responses by status class, errors (5xx or no answer), failures (no answer),
retries (attempts nginx followed with another peer), p50/p95/p99 of the upstream response
time and of the header time (HDR-style histograms), bytes both ways. Clicking a peer asks
for the filter `upstream=ADDR` (`peer_clicked`).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPalette, QPen, QPolygonF
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QStackedLayout,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from ngxscope.store.aggregate import SPARK_S, Aggregator, PeerRow
from ngxscope.store.diff import DiffRow

from .tablemodel import DASH, STATUS_COLORS, fmt_bytes, fmt_ms

__all__ = ["SparklineDelegate", "UpstreamsPanel", "peer_cells"]

HEADERS = ["Group / peer", f"Last {SPARK_S} s", "Requests", "req/s", "2xx", "3xx", "4xx",
           "5xx", "Errors", "Failures", "Retries", "p50", "p95", "p99", "hdr p50", "hdr p95",
           "hdr p99", "Sent", "Received"]
SPARK_COL = 1
COL_WIDTHS = (200, 100, 68, 52, 44, 44, 44, 44, 72, 58, 52, 58, 58, 58, 58, 58, 58, 66, 66)
SPARK_ROLE = Qt.ItemDataRole.UserRole + 10
ADDR_ROLE = Qt.ItemDataRole.UserRole + 11
TIPS = {
    "Errors": "Attempts answered with 5xx or not answered at all (share of all attempts)",
    "Failures": "Attempts the peer never answered: connection refused, reset or timed out",
    "Retries": "Attempts nginx followed with another attempt (proxy_next_upstream)",
    "p50": "Upstream response time ($upstream_response_time) percentiles",
    "hdr p50": "Upstream header time ($upstream_header_time) percentiles",
    f"Last {SPARK_S} s": f"Attempts per second over the last {SPARK_S} s",
}
RED = STATUS_COLORS[4]
WORSE_BG = QColor(214, 69, 69, 70)


def peer_cells(r: PeerRow) -> list[str]:
    """The text of every column but the first two for one peer/group row."""
    return [f"{r.requests:,}", f"{r.rate:,.1f}", *(f"{c:,}" for c in r.classes[1:5]),
            f"{r.errors:,} ({r.error_rate:.0%})" if r.errors else "0",
            f"{r.failures:,}", f"{r.retries:,}",
            fmt_ms(r.p50), fmt_ms(r.p95), fmt_ms(r.p99),
            fmt_ms(r.header_p50), fmt_ms(r.header_p95), fmt_ms(r.header_p99),
            fmt_bytes(r.bytes_sent), fmt_bytes(r.bytes_received)]


class SparklineDelegate(QStyledItemDelegate):
    """Draws the float array in SPARK_ROLE as a small filled line (req/s over time)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        data = index.data(SPARK_ROLE)
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        style = opt.widget.style() if opt.widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        if data is None or len(data) < 2:
            return
        y = np.asarray(data, float)
        r = QRectF(option.rect).adjusted(4, 4, -4, -4)
        top = max(1.0, float(y.max()))
        step = r.width() / (len(y) - 1)
        pts = [QPointF(r.left() + i * step, r.bottom() - v / top * r.height())
               for i, v in enumerate(y.tolist())]
        color = QColor(index.data(Qt.ItemDataRole.UserRole + 12) or "#2f7fc1")
        fill = QColor(color)
        fill.setAlpha(60)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QPolygonF([QPointF(r.left(), r.bottom()), *pts, QPointF(r.right(), r.bottom())])
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(fill))
        painter.drawPolygon(area)
        painter.setPen(QPen(color, 1.3))
        painter.drawPolyline(QPolygonF(pts))
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem,
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(110, 22)


class UpstreamsPanel(QWidget):
    """Groups and peers; clicking a peer asks for the filter `upstream=ADDR`."""

    peer_clicked = Signal(str)
    HEADERS = HEADERS

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        t = QTreeWidget()
        t.setColumnCount(len(HEADERS))
        t.setHeaderLabels(HEADERS)
        t.setRootIsDecorated(True)
        t.setUniformRowHeights(True)
        t.setAlternatingRowColors(True)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setItemDelegateForColumn(SPARK_COL, SparklineDelegate(t))
        t.itemClicked.connect(self._clicked)
        head = t.headerItem()
        for col, name in enumerate(HEADERS):
            if col > 1:
                head.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for key, tip in TIPS.items():
                if name.startswith(key):
                    head.setToolTip(col, tip)
        hh = t.header()
        hh.setStretchLastSection(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate(COL_WIDTHS):
            t.setColumnWidth(col, width)
        self.tree = t
        self.empty = QLabel(
            "No upstream traffic yet.\nRequests nginx passes on (proxy_pass, fastcgi_pass …) "
            "appear here per upstream group and peer;\nclick a peer to show only its requests.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setEnabled(False)
        self.stack = QStackedLayout(self)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(t)
        self.groups: dict[str, QTreeWidgetItem] = {}
        self.items: dict[tuple[str, str], QTreeWidgetItem] = {}
        self.addrs: list[str] = []
        """Peer addresses in display order."""
        self._bold = QFont()
        self._bold.setBold(True)
        self._rows: list[PeerRow] = []

    def _clicked(self, item: QTreeWidgetItem, _col: int) -> None:
        addr = item.data(0, ADDR_ROLE)
        if addr:
            self.peer_clicked.emit(str(addr))

    def click_peer(self, addr: str, group: str | None = None) -> None:
        """Act as if the peer's row was clicked (first matching row)."""
        for (g, a), item in self.items.items():
            if a == addr and (group is None or g == group):
                self.tree.setCurrentItem(item)
                self._clicked(item, 0)
                return

    def rows(self) -> list[PeerRow]:
        """The peer rows last shown."""
        return list(self._rows)

    def refresh(self, agg: Aggregator) -> None:
        peers = agg.peer_rows()
        groups = agg.group_rows()
        self._rows = peers
        self.stack.setCurrentIndex(1 if peers else 0)
        seen_groups = {g.group for g in groups}
        seen_peers = {(r.group, r.addr) for r in peers}
        for key in [k for k in self.items if k not in seen_peers]:
            gone = self.items.pop(key)
            parent = gone.parent()
            if parent is not None:
                parent.removeChild(gone)
        for name in [g for g in self.groups if g not in seen_groups]:
            self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(self.groups.pop(name)))
        for g in groups:
            top = self.groups.get(g.group)
            if top is None:
                top = self.groups[g.group] = QTreeWidgetItem(self.tree)
                top.setExpanded(True)
            n = sum(1 for r in peers if r.group == g.group)
            self._fill(top, g, f"{g.group}  ({n} peer{'s' if n != 1 else ''})", bold=True)
        self.addrs = []
        for r in peers:
            item = self.items.get((r.group, r.addr))
            if item is None:
                item = self.items[(r.group, r.addr)] = QTreeWidgetItem(self.groups[r.group])
                item.setData(0, ADDR_ROLE, r.addr)
            self._fill(item, r, r.addr)
            item.setToolTip(0, f"{r.addr} in upstream {r.group}: {r.requests:,} attempts, "
                               f"{r.failures:,} unanswered, {r.retries:,} retried elsewhere\n"
                               "Click to show only the requests this peer served")
            self.addrs.append(r.addr)

    def set_verdicts(self, verdicts: dict[tuple[str, str], DiffRow], baseline_name: str) -> None:
        """Tint the peers that got significantly worse than a pinned baseline (empty: none)."""
        for (_group, addr), item in self.items.items():
            v = verdicts.get(("upstream peer", addr))
            worse = v is not None and v.worse
            for col in range(len(HEADERS)):
                item.setBackground(col, WORSE_BG if worse else QBrush())
            tip = item.toolTip(0).split("\nworse than the baseline", 1)[0]
            if worse and v is not None:
                tip += f"\nworse than the baseline ({baseline_name}): p50 {fmt_ms(v.a.p50)} → {fmt_ms(v.b.p50)}, " \
                       f"errors {v.a.error_rate:.1%} → {v.b.error_rate:.1%}"
            item.setToolTip(0, tip)

    def _fill(self, item: QTreeWidgetItem, r: PeerRow, label: str, *, bold: bool = False) -> None:
        cells = ["", *peer_cells(r)]
        if item.text(0) != label:
            item.setText(0, label)
            if bold:
                item.setFont(0, self._bold)
        item.setData(SPARK_COL, SPARK_ROLE, r.spark.tolist())
        bad = r.error_rate > 0.05 or r.failures
        item.setData(SPARK_COL, Qt.ItemDataRole.UserRole + 12, RED.name() if bad else None)
        pal = self.palette()
        dim = pal.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        for col, text in enumerate(cells[1:], start=2):
            if item.text(col) != text:
                item.setText(col, text)
                item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if 4 <= col <= 7:
                count = r.classes[col - 3]
                item.setForeground(col, STATUS_COLORS[col - 3] if count else dim)
            elif col in (8, 9, 10):
                value = (r.errors, r.failures, r.retries)[col - 8]
                item.setForeground(col, RED if value and (col != 8 or r.error_rate > 0.05)
                                   else (pal.color(QPalette.ColorRole.Text) if value else dim))
            elif cells[col - 1] == DASH:
                item.setForeground(col, dim)
