"""The detail pane for the selected exchange: Request, Response, Timing, Upstream, Connection tabs."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import Exchange

from ..store.bodies import RenderedBody, render_request, render_response
from .handshake import HandshakeTimeline, handshake_text
from .tablemodel import DASH, STATUS_COLORS, _status_cls, fmt_bytes, fmt_ms
from .upstreamdetail import UpstreamView
from .waterfall import WaterfallWidget

__all__ = ["DetailPane", "MessageView"]

PLACEHOLDER = ("Select a request to see its headers and body, its timing (client, nginx and "
               "upstream), the upstream attempts nginx made and its connection.\n\n"
               "↑/↓ move through the requests · right-click a cell to filter by its value · "
               "Ctrl+F filters · Space pauses")


class MessageView(QWidget):
    """Start line, a headers table and the decoded body of one side of an exchange."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.start_line = QLabel()
        self.start_line.setFont(mono)
        self.start_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.headers = QTableWidget(0, 2)
        self.headers.setHorizontalHeaderLabels(["Header", "Value"])
        self.headers.verticalHeader().setVisible(False)
        self.headers.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.headers.verticalHeader().setDefaultSectionSize(22)
        self.headers.horizontalHeader().setStretchLastSection(True)
        self.headers.setColumnWidth(0, 170)
        self.headers.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.headers.setAlternatingRowColors(True)
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet("color: #d9822b;")
        self.body = QPlainTextEdit()
        self.body.setReadOnly(True)
        self.body.setFont(mono)
        self.body.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.body.setPlaceholderText("(no body)")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.headers)
        body_box = QWidget()
        bl = QVBoxLayout(body_box)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.setSpacing(2)
        bl.addWidget(self.notes)
        bl.addWidget(self.body)
        split.addWidget(body_box)
        split.setSizes([140, 220])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.start_line)
        lay.addWidget(split)

    def show_message(self, start_line: str, headers: list[tuple[str, str]],
                     rendered: RenderedBody) -> None:
        self.start_line.setText(start_line)
        self.headers.setRowCount(len(headers))
        for i, (k, v) in enumerate(headers):
            self.headers.setItem(i, 0, QTableWidgetItem(k))
            self.headers.setItem(i, 1, QTableWidgetItem(v))
        self.notes.setText(" · ".join(rendered.notes))
        self.notes.setVisible(bool(rendered.notes))
        self.body.setPlainText(rendered.text)

    def clear(self) -> None:
        self.start_line.setText("")
        self.headers.setRowCount(0)
        self.notes.setVisible(False)
        self.body.clear()


_SUMMARY_ONLY = ("none; payload not captured (shed or sampled out): method, target, status, sizes and "
                 "times from the kernel's summary")


def _ts(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class DetailPane(QTabWidget):
    """Tabs describing one exchange. `related` lists the other requests on its connection."""

    exchange_activated = Signal(object)
    """A request in the Connection tab's list was double-clicked (the Exchange)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.related_lookup: Callable[[str], list[Exchange]] = lambda _conn: []
        self.exchange: Exchange | None = None
        self.request = MessageView()
        self.response = MessageView()
        self.timing = WaterfallWidget()
        self.upstream = UpstreamView()
        self.addTab(self.request, "Request")
        self.addTab(self.response, "Response")
        self.addTab(self.timing, "Timing")
        self.addTab(self.upstream, "Upstream")
        self.addTab(self._build_connection(), "Connection")
        self.upstream_tab = self.indexOf(self.upstream)
        self.setDocumentMode(True)
        self.placeholder = QLabel(PLACEHOLDER, self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setAutoFillBackground(True)
        self.placeholder.setBackgroundRole(QPalette.ColorRole.Base)
        self.placeholder.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.show_exchange(None)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place_placeholder()

    def _place_placeholder(self) -> None:
        top = self.tabBar().geometry().bottom() + 1
        self.placeholder.setGeometry(0, top, self.width(), max(0, self.height() - top))

    def _build_connection(self) -> QWidget:
        w = QWidget()
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.conn_labels: dict[str, QLabel] = {}
        for key in ("Client", "Server", "TLS", "Worker", "Connection", "Request #", "Started",
                    "Ended", "Error", "Handshake"):
            label = QLabel()
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.conn_labels[key] = label
            form.addRow(key + ":", label)
        self.related = QTableWidget(0, 5)
        self.related.setHorizontalHeaderLabels(["#", "Method", "Path", "Status", "Duration"])
        self.related.verticalHeader().setVisible(False)
        self.related.verticalHeader().setDefaultSectionSize(22)
        self.related.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        for col, width in ((0, 40), (1, 64), (3, 56), (4, 80)):
            self.related.setColumnWidth(col, width)
        self.related.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.related.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.related.cellDoubleClicked.connect(self._related_activated)
        self._related_items: list[Exchange] = []
        self.handshake = HandshakeTimeline()
        lay = QVBoxLayout(w)
        lay.addLayout(form)
        lay.addWidget(self.handshake)
        lay.addWidget(QLabel("Requests on this connection:"))
        lay.addWidget(self.related)
        return w

    def _related_activated(self, row: int, _col: int) -> None:
        if 0 <= row < len(self._related_items):
            self.exchange_activated.emit(self._related_items[row])

    def show_exchange(self, ex: Exchange | None) -> None:
        """Fill every tab from `ex` (None clears)."""
        self.exchange = ex
        self.timing.set_exchange(ex)
        self.upstream.show_exchange(ex)
        n = len(ex.upstream) if ex is not None else 0
        self.setTabText(self.upstream_tab, f"Upstream ({n})" if n else "Upstream")
        self.placeholder.setVisible(ex is None)
        if ex is None:
            self._place_placeholder()
            self.placeholder.raise_()
            self.request.clear()
            self.response.clear()
            for label in self.conn_labels.values():
                label.setText("")
            self.related.setRowCount(0)
            self.handshake.set_exchange(None, [])
            return
        req_line = f"{ex.method or '?'} {ex.target or '?'} {ex.version}".strip()
        if ex.is_tcp:
            req_line = f"TCP session {ex.client} → {ex.server} (stream proxy: raw bytes)"
        elif ex.conn_outcome is not None:
            req_line = f"no request: connection {ex.client} → {ex.server} ({ex.conn_outcome})"
        self.request.show_message(req_line, ex.request_headers, render_request(ex))
        if ex.status is None:
            resp_line = f"(no response){': ' + ex.error if ex.error else ''}"
        else:
            resp_line = f"{ex.version or 'HTTP/1.1'} {ex.status} {ex.reason}".strip()
            if ex.is_tcp:
                resp_line = f"TCP session status {ex.status}"
        self.response.show_message(resp_line, ex.response_headers, render_response(ex))
        color = STATUS_COLORS[_status_cls(ex.status)].name()
        self.response.start_line.setStyleSheet(f"color: {color}; font-weight: bold;")
        lab = self.conn_labels
        lab["Client"].setText(ex.client)
        lab["Server"].setText(ex.server)
        lab["TLS"].setText("yes (decrypted plaintext shown)" if ex.tls else "no")
        lab["Worker"].setText(f"pid {ex.pid}")
        if ex.conn_outcome is not None:  # a connection that never became a request
            lab["TLS"].setText("handshake only, nothing decrypted" if ex.tls else "no")
            lab["Worker"].setText(DASH)
        lab["Connection"].setText(ex.conn_id or DASH)
        lab["Request #"].setText(f"{ex.conn_seq + 1} on this connection (capture id {ex.id})")
        lab["Started"].setText(_ts(ex.start))
        lab["Ended"].setText(f"{_ts(ex.end)}  ({fmt_ms(ex.duration_ms)}, "
                             f"{fmt_bytes(ex.request_bytes)} in, "
                             f"{fmt_bytes(ex.response_bytes)} out)")
        lab["Error"].setText(ex.error or (_SUMMARY_ONLY if ex.summary_only else DASH))
        related = self.related_lookup(ex.conn_id) if ex.conn_id else [ex]
        self._related_items = related[-200:]
        self.handshake.set_exchange(ex, related)
        lab["Handshake"].setText(handshake_text(ex))
        self.related.setRowCount(len(self._related_items))
        for i, other in enumerate(self._related_items):
            cells = [str(other.conn_seq + 1), other.method, other.target,
                     str(other.status) if other.status is not None else DASH,
                     fmt_ms(other.duration_ms)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if other is ex:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                if col == 3:
                    item.setForeground(STATUS_COLORS[_status_cls(other.status)])
                self.related.setItem(i, col, item)
