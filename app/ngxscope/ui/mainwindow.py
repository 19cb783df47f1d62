"""The main window: live request table, filter bar, detail pane, graphs and side panels.

Data flow: one frame timer (`_tick`) polls the `ExchangeSource` (`ui.livefeed`) and appends
the batch to the store through the table model (one insert signal per batch) and to the
aggregates; graphs and panels are redrawn from the aggregates on other frames. Nothing here
blocks on I/O.

Hooks for the lead (session files): the signals `open_session_requested(path)`,
`save_requested(path)`, `export_requested(path)` and `attach_requested(pid)`; `load()`
shows a whole session; `source_factory(pid)` makes the source for Capture → Attach….
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QByteArray, QModelIndex, QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QMenu,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.store.aggcounted import CountedGraphs
from ngxscope.store.aggregate import Aggregator
from ngxscope.store.filterexpr import Predicate, search_patterns
from ngxscope.store.memory import ExchangeStore

from ..pipeline.source import ExchangeSource, StreamSource, helper_argv
from .detail import DetailPane
from .filterbar import FilterBar
from .findbar import FindBar
from .icon import app_icon
from .livefeed import LiveFeed
from .menus import build_menus, cell_menu, columns_menu
from .recent import DropOpener
from .replaydialog import ReplayDialog, ReplayManyDialog
from .statusbar import CaptureStatusBar
from .tablemodel import COLUMN_KEYS, ExchangeFilterProxy, ExchangeTableModel
from .tableview import build_table

__all__ = ["MainWindow"]

FRAME_MS = 40
"""One frame timer drives everything, one kind of work per frame, so the costs of the
table insert, the graph redraw and the panel refresh (and the repaints each causes)
never pile up in one event-loop pass."""
INGEST_EVERY = 2  # frames: 80 ms, 12.5 Hz
GRAPH_EVERY, GRAPH_PHASE = 8, 3  # 320 ms, about 3 Hz, on odd frames
PANEL_EVERY, PANEL_PHASE = 24, 7  # 960 ms, on odd frames, never with the graphs
SETTINGS_ORG = "ngxscope"
HEADER_KEY = "table/header-v3"
"""Saved column layout (v3: a Node column; an older layout would mislabel columns)."""


def default_source_factory(pid: int) -> ExchangeSource:
    """The capture helper for `pid` (elevated with pkexec/sudo when not root)."""
    return StreamSource(helper_argv(pid))


class MainWindow(DropOpener, LiveFeed):
    """The ngxscope window. Give it a source (or attach / open later). Its signals are
    declared in `WindowBase` (open_session_requested, save_requested, export_requested,
    attach_requested)."""

    def __init__(
        self,
        source: ExchangeSource | None = None,
        *,
        title: str = "",
        capacity: int = 200_000,
        settings: QSettings | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or QSettings(SETTINGS_ORG, "ngxscope")
        self.setAcceptDrops(True)
        self.base_title = title or "ngxscope"
        self.setWindowTitle(self.base_title)
        self.setWindowIcon(app_icon())
        self.store = ExchangeStore(capacity)
        self.events: list[LifecycleEvent] = []
        self.agg = Aggregator()
        self.counted = CountedGraphs(self.agg)
        self._init_feed()
        self.source_factory: Callable[[int], ExchangeSource] = default_source_factory
        self.session_path: str | None = None
        self.autoscroll = True
        self.filter_text = ""

        self.model = ExchangeTableModel(self.store, self)
        self.proxy = ExchangeFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self._build_table()
        self.filter_bar = FilterBar()
        self.filter_bar.filter_changed.connect(self.apply_filter)
        self.detail = DetailPane()
        self.detail.related_lookup = self.store.by_conn
        self.detail.redaction_lookup = lambda: self.status.redaction_target
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(0)
        tl.addWidget(self.filter_bar)
        tl.addWidget(self.table)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.find_bar = FindBar()
        self.detail.set_find_bar(self.find_bar)
        self.detail.replay_requested.connect(self.replay)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.setSpacing(0)
        bl.addWidget(self.detail)
        bl.addWidget(self.find_bar)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([560, 360])
        self.setCentralWidget(self.splitter)
        self._build_docks()
        self.status = CaptureStatusBar(self)
        self.setStatusBar(self.status)
        build_menus(self)
        self.resize(1600, 1000)
        self._restore_settings()

        self._frame = 0
        self.frame_timer = QTimer(self)
        self.frame_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.frame_timer.setInterval(FRAME_MS)
        self.frame_timer.timeout.connect(self._tick)
        self.frame_timer.start()
        if source is not None:
            self.set_source(source)

    # -- construction ----------------------------------------------------------------

    def _build_table(self) -> None:
        self.table = build_table(self.proxy)
        t = self.table
        t.horizontalHeader().sortIndicatorChanged.connect(self._sort_changed)
        t.horizontalHeader().customContextMenuRequested.connect(self._header_menu)
        t.customContextMenuRequested.connect(self._cell_menu)
        t.selectionModel().currentRowChanged.connect(self._current_changed)
        t.verticalScrollBar().valueChanged.connect(self._scrolled)

    def _tick(self) -> None:
        """One frame: ingest on even frames; graphs or panels on some odd frames."""
        k = self._frame = self._frame + 1
        if k % INGEST_EVERY == 0:
            self.ingest()
        elif k % GRAPH_EVERY == GRAPH_PHASE:
            self.refresh_graphs()
        elif k % PANEL_EVERY == PANEL_PHASE:
            self.refresh_panels()

    def attach(self, pid: int) -> None:
        """Attach to nginx `pid` with `source_factory` (after `attach_requested`)."""
        self.attach_requested.emit(pid)
        self.clear()
        self.set_source(self.source_factory(pid))

    def load(self, exchanges: Iterable[Exchange], events: Iterable[LifecycleEvent] = (),
             *, description: str = "", path: str | None = None, aggregated: bool = False) -> None:
        """Show a complete set of exchanges (an opened session); stops any live source.

        aggregated: the caller already fed every exchange of the session to `self.agg`
        (a large session streamed in: the table keeps only the newest rows).
        """
        if self.source is not None:
            self.source.stop()
            self.source = None
        items = list(exchanges)
        self.agg.clock = None  # a session: graphs end at its newest request
        self._pending.clear()
        self._pending_agg.clear()
        self.model.replace(items)
        self.events = list(events)
        self.events_log.clear()
        self.events_log.add_events(self.events)
        self.docks["events"].setWindowTitle(f"Events ({len(self.events):,})" if self.events
                                            else "Events")
        if not aggregated:
            self.agg.rebuild(self.store)
        self.session_path = path
        self.status.set_source(description or (path or "session"))
        self.status.set_state("session", "session file")
        self.setWindowTitle(f"{self.base_title} — {description or path or 'session'}")
        self.refresh_graphs()
        self.refresh_panels()

    def clear(self) -> None:
        """Forget every exchange shown (the capture continues)."""
        self._pending.clear()
        self._pending_agg.clear()
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.model.clear()
        self.agg.reset()
        self.counted.clear()
        self.detail.show_exchange(None)
        self.refresh_graphs()
        self.refresh_panels()

    # -- filter ----------------------------------------------------------------------

    def apply_filter(self, predicate: Predicate | None, text: str) -> None:
        """Apply a compiled filter to the table and (by rebuilding) to the graphs."""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            self.filter_text = text
            self.detail.set_filter_patterns(search_patterns(text))
            self.proxy.set_predicate(predicate)
            self.agg.set_predicate(predicate)
            # rows held back by a sorted table were already counted: count them again
            counted = self._pending[: len(self._pending) - len(self._pending_agg)]
            self.agg.rebuild(itertools.chain(self.store, counted))
            self.counted.refeed()
            self.refresh_graphs()
            self.refresh_panels()
        finally:
            QApplication.restoreOverrideCursor()
        if self.autoscroll:
            self.table.scrollToBottom()

    def set_mark(self, exchanges: list[Exchange], mark: str) -> None:
        """Mark rows with a colour ("" clears); saved with the session."""
        for ex in exchanges:
            ex.mark = mark
        self._rows_changed()

    def set_note(self, exchanges: list[Exchange], note: str) -> None:
        """Set the note of rows ("" removes it); saved with the session."""
        for ex in exchanges:
            ex.note = note
        self._rows_changed()
        self.detail.show_exchange(self.detail.exchange)

    def _rows_changed(self) -> None:
        m = self.model
        if m.rowCount():
            m.dataChanged.emit(m.index(0, 0), m.index(m.rowCount() - 1, m.columnCount() - 1))
        if self.filter_text:
            self.proxy.invalidate()  # a filter on marks or notes must see the change

    def replay(self, ex: Exchange | None) -> QDialog | None:
        """Open the Replay dialog for `ex` (non-modal; returned for tests)."""
        if ex is None or not ex.method or ex.is_tcp:
            return None
        dlg = ReplayDialog(ex, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        return dlg

    def replay_many(self, exchanges: list[Exchange]) -> QDialog:
        """Open the dialog replaying several requests to their nginx (returned for tests)."""
        dlg = ReplayManyDialog(exchanges, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        return dlg

    def find_or_filter(self) -> None:
        """Ctrl+F: Find in the detail pane when it has the focus, else focus the filter."""
        focus = QApplication.focusWidget()
        inside = focus is not None and (self.detail.isAncestorOf(focus)
                                        or self.find_bar.isAncestorOf(focus))
        if inside and self.detail.exchange is not None:
            self.find_bar.open_bar()
        else:
            self.filter_bar.focus()

    def _cell_menu(self, pos: Any) -> None:
        menu = cell_menu(self, self.table.indexAt(pos))
        if menu is not None:
            menu.exec(self.table.viewport().mapToGlobal(pos))

    def _header_menu(self, pos: Any) -> None:
        self.columns_menu().exec(self.table.horizontalHeader().mapToGlobal(pos))

    def columns_menu(self, menu: QMenu | None = None) -> QMenu:
        """A menu of checkable actions showing/hiding each column."""
        return columns_menu(self, menu)

    # -- selection / refresh ---------------------------------------------------------

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.detail.show_exchange(self.proxy.exchange_at(current))

    def select_exchange(self, ex: Exchange) -> None:
        """Select `ex` in the table if it is still shown (else just show its details)."""
        for row in range(self.proxy.rowCount() - 1, -1, -1):
            if self.proxy.exchange_at(self.proxy.index(row, 0)) is ex:
                self.table.selectRow(row)
                self.table.scrollTo(self.proxy.index(row, 0))
                return
        self.detail.show_exchange(ex)

    def selected_exchanges(self) -> list[Exchange]:
        """The selected rows' exchanges, in view order."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [ex for r in rows if (ex := self.proxy.exchange_at(self.proxy.index(r, 0)))]

    def _show_slow(self, ex: Exchange) -> None:
        """An outlier clicked in the Slowest panel: select it, its waterfall in front."""
        self.select_exchange(ex)
        self.detail.setCurrentWidget(self.detail.timing)

    def visible_exchanges(self) -> list[Exchange]:
        """The exchanges the table shows now (filter applied), in view order (for Export)."""
        proxy = self.proxy
        return [ex for r in range(proxy.rowCount())
                if (ex := proxy.exchange_at(proxy.index(r, 0))) is not None]

    def refresh_panels(self) -> None:
        if not self.paused:
            self.refresh_docks()
        self.status.set_rows(self.proxy.rowCount(), len(self.store), self.store.dropped)
        self.status.set_stats(self._last_stats, req_rate=self.agg.rate())
        self._last_stats = None
        if (self.paused or self.model.sorted) and self.status.state_kind != "died":
            self._show_state()

    # -- desktop habits --------------------------------------------------------------

    def _restore_settings(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        state = s.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        header = s.value(HEADER_KEY)
        if isinstance(header, QByteArray) and not header.isEmpty():
            self.table.horizontalHeader().restoreState(header)
            self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.table.horizontalHeader().setSectionHidden(COLUMN_KEYS.index("node"), True)  # local until remote
        window = s.value("graphs/window")
        if window is not None:
            try:
                self.graphs.set_window(int(str(window)))
            except (TypeError, ValueError):
                pass

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue(HEADER_KEY, self.table.horizontalHeader().saveState())
        s.setValue("graphs/window", self.graphs.window_s)
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_settings()
        self.frame_timer.stop()
        if self.source is not None:
            self.source.stop()
        super().closeEvent(event)
