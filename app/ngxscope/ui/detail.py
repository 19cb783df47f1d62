"""The detail pane for the selected exchange: Request, Response, Timing, Upstream, Connection tabs."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ngxscope.decode.tracecontext import header_value, parse_traceparent
from ngxscope.model import Exchange

from ..store.bodies import RenderedBody, render_request, render_response
from .copymenu import fill_copy_menu
from .findbar import FindBar, highlight
from .handshake import HandshakeTimeline, handshake_text
from .tablemodel import DASH, STATUS_COLORS, _status_cls, fmt_bytes, fmt_ms
from .upstreamdetail import UpstreamView
from .waterfall import WaterfallWidget

__all__ = ["DetailPane", "MessageView", "client_text", "nginx_clock_text"]

PLACEHOLDER = ("Select a request to see its headers and body, its timing (client, nginx and "
               "upstream), the upstream attempts nginx made and its connection.\n\n"
               "↑/↓ move through the requests · right-click a cell to filter by its value · "
               "Ctrl+F filters (in this pane: finds) · Space pauses")


_LOCATION_VIA = {"nginx": "  (read from nginx's memory)", "config": "  (nginx's choice repeated on its configuration)"}
"""How the detail pane says where the location came from (`Exchange.location_via`)."""


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


def client_text(ex: Exchange) -> str:
    """The client as nginx logged it ($remote_addr: realip's, or the PROXY header's) beside
    the socket's peer."""
    if ex.remote:
        return f"{ex.remote}  (realip: nginx's $remote_addr; socket peer {ex.client})"
    if ex.proxy_client is not None:
        return f"{ex.proxy_client or 'not named'}  (PROXY protocol header; socket peer {ex.client})"
    return ex.client


def nginx_clock_text(ex: Exchange) -> str:
    """When nginx says it finished ($msec) and how long it says it took ($request_time), on its
    cached clock."""
    if ex.nginx_end is None and ex.nginx_ms is None:
        return DASH
    parts = []
    if ex.nginx_end is not None:
        parts.append(f"$msec {ex.nginx_end:.3f} ({_ts(ex.nginx_end)})")
    if ex.nginx_ms is not None:
        parts.append(f"$request_time {ex.nginx_ms / 1000.0:.3f} s")
    return "  ·  ".join(parts) + "  — nginx's cached clock, can trail the capture's"


class DetailPane(QTabWidget):
    """Tabs describing one exchange. `related` lists the other requests on its connection."""

    exchange_activated = Signal(object)
    """A request in the Connection tab's list was double-clicked (the Exchange)."""
    replay_requested = Signal(object)
    """Replay… was clicked (the Exchange shown)."""

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
        self.redaction_lookup: Callable[[], dict | None] = lambda: None
        """The session/stream header's redaction facts (for the Copy as menu)."""
        self.copy_button = QToolButton()
        self.copy_button.setText("Copy as")
        self.copy_button.setToolTip("Copy this request as curl, HTTPie, raw HTTP or Python "
                                    "requests (as nginx received it, or as sent upstream)")
        self.copy_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.copy_menu = QMenu(self.copy_button)
        self.copy_menu.aboutToShow.connect(self._fill_copy_menu)
        self.copy_button.setMenu(self.copy_menu)
        self.replay_button = QToolButton()
        self.replay_button.setText("Replay…")
        self.replay_button.setToolTip("Send this request again, to nginx or to one of its "
                                      "upstream peers, and compare the answers")
        self.replay_button.clicked.connect(lambda: self.replay_requested.emit(self.exchange))
        corner = QWidget()
        cl = QHBoxLayout(corner)
        cl.setContentsMargins(0, 0, 2, 0)
        cl.setSpacing(2)
        cl.addWidget(self.replay_button)
        cl.addWidget(self.copy_button)
        self.setCornerWidget(corner, Qt.Corner.TopRightCorner)
        self.filter_patterns: list[re.Pattern[str]] = []
        """Patterns of the filter's header/body terms, highlighted in every exchange shown."""
        self.find_bar: FindBar | None = None
        self._match = -1
        self.placeholder = QLabel(PLACEHOLDER, self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setAutoFillBackground(True)
        self.placeholder.setBackgroundRole(QPalette.ColorRole.Base)
        self.placeholder.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.show_exchange(None)

    # -- find ---------------------------------------------------------------------------

    def set_find_bar(self, bar: FindBar) -> None:
        """Use `bar` (laid out by the window under the pane) for Find."""
        self.find_bar = bar
        bar.changed.connect(self.refresh_highlights)
        bar.step.connect(self.step_match)

    def set_filter_patterns(self, patterns: list[re.Pattern[str]]) -> None:
        self.filter_patterns = patterns
        self.refresh_highlights()

    def _patterns(self) -> list[re.Pattern[str]]:
        found = self.find_bar.pattern() if self.find_bar is not None else None
        return [*self.filter_patterns, *([found] if found is not None else [])]

    def refresh_highlights(self) -> int:
        """Highlight the filter's and the Find bar's matches; returns the body matches."""
        self._match = -1
        pats = self._patterns() if self.exchange is not None else []
        n = sum(len(highlight(view, pats)) for view in (self.request, self.response))
        if self.find_bar is not None:
            self.find_bar.show_count(n, -1)
        return n

    def step_match(self, delta: int) -> None:
        """Go to the next (+1) or previous (-1) body match, request body first."""
        pats = self._patterns()
        req = highlight(self.request, pats)
        resp = highlight(self.response, pats)
        n = len(req) + len(resp)
        if not n:
            if self.find_bar is not None:
                self.find_bar.show_count(0, -1)
            return
        self._match = (self._match + delta) % n
        if self._match < len(req):
            highlight(self.request, pats, self._match)
            self.setCurrentWidget(self.request)
        else:
            highlight(self.response, pats, self._match - len(req))
            self.setCurrentWidget(self.response)
        if self.find_bar is not None:
            self.find_bar.show_count(n, self._match)

    def _fill_copy_menu(self) -> None:
        fill_copy_menu(self.copy_menu, [self.exchange] if self.exchange else [],
                       self.redaction_lookup())

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
                    "Ended", "nginx clock", "Error", "Note", "Location", "Trace", "Handshake"):
            label = QLabel()
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.conn_labels[key] = label
            if key == "Trace":
                self.copy_trace = QPushButton("Copy trace id")
                self.copy_trace.clicked.connect(self._copy_trace_id)
                row = QHBoxLayout()
                row.addWidget(label, 1)
                row.addWidget(self.copy_trace)
                form.addRow(key + ":", row)
            else:
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

    def trace_id(self) -> str | None:
        """The W3C trace id the shown request arrived with (its `traceparent`), if any."""
        ex = self.exchange
        tp = parse_traceparent(header_value(ex.request_headers, "traceparent") or "") if ex else None
        return tp.trace_id if tp else None

    def _copy_trace_id(self) -> None:
        tid = self.trace_id()
        if tid:
            QGuiApplication.clipboard().setText(tid)

    def _related_activated(self, row: int, _col: int) -> None:
        if 0 <= row < len(self._related_items):
            self.exchange_activated.emit(self._related_items[row])

    def show_exchange(self, ex: Exchange | None) -> None:
        """Fill every tab from `ex` (None clears)."""
        self.exchange = ex
        self.timing.set_exchange(ex)
        self.upstream.show_exchange(ex)
        n = len(ex.upstream) if ex is not None else 0
        subs = len(ex.subrequest_upstream) if ex is not None else 0
        self.setTabText(self.upstream_tab, (f"Upstream ({n}" + (f" + {subs} sub" if subs else "") + ")")
                        if n or subs else "Upstream")
        self.placeholder.setVisible(ex is None)
        self.copy_button.setEnabled(ex is not None and bool(ex.method) and not ex.is_tcp)
        self.replay_button.setEnabled(self.copy_button.isEnabled())
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
        lab["Client"].setText(client_text(ex))
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
        lab["nginx clock"].setText(nginx_clock_text(ex))
        lab["Error"].setText(ex.error or (_SUMMARY_ONLY if ex.summary_only else DASH))
        lab["Note"].setText((f"[{ex.mark}] " if ex.mark else "") + (ex.note or DASH))
        via = _LOCATION_VIA.get(ex.location_via or "", "")
        lab["Location"].setText(f"{ex.server_block or '?'} \u203a {ex.location}{via}" if ex.location else DASH)
        tid = self.trace_id()
        lab["Trace"].setText(tid or "(no traceparent)")
        self.copy_trace.setEnabled(tid is not None)
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
        self.refresh_highlights()
