"""The main window: live request table, filter bar, detail pane, graphs and side panels.

Data flow: a 20 Hz QTimer polls the `ExchangeSource` and appends the batch to the store
through the table model (one insert signal per batch) and to the aggregates; graphs and
panels are redrawn from the aggregates by slower timers. Nothing here blocks on I/O.

Hooks for the lead (session files): the signals `open_session_requested(path)`,
`save_requested(path)`, `export_requested(path)` and `attach_requested(pid)`; `load()`
shows a whole session; `source_factory(pid)` makes the source for Capture → Attach….
"""

from __future__ import annotations

import gc
import itertools
import time
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
from .docks import DockedPanels
from .filterbar import FilterBar
from .findbar import FindBar
from .icon import app_icon
from .menus import build_menus, cell_menu, columns_menu
from .recent import DropOpener
from .replaydialog import ReplayDialog, ReplayManyDialog
from .statusbar import CaptureStatusBar
from .tablemodel import COLUMN_KEYS, COLUMNS, ExchangeFilterProxy, ExchangeTableModel
from .tableview import build_table, fit_upstream_column

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


class MainWindow(DropOpener, DockedPanels):
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
        self.source: ExchangeSource | None = None
        self.source_factory: Callable[[int], ExchangeSource] = default_source_factory
        self.session_path: str | None = None
        self.paused = False
        self.autoscroll = True
        self._pending: list[Exchange] = []
        """Exchanges polled but not yet in the table (paused or sorted)."""
        self._pending_agg: list[Exchange] = []
        """Exchanges polled but not yet in the aggregates (paused)."""
        self._died_reported = False
        self._redaction_header: dict | None = None
        self._last_stats: dict[str, Any] | None = None
        self._upstream_fit = 0
        """Most upstream attempts of one exchange the Upstream column was fitted to."""
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

    # -- sources ---------------------------------------------------------------------

    def set_source(self, source: ExchangeSource | None) -> None:
        """Stop the current source (if any) and start `source`."""
        if self.source is not None:
            self.source.stop()
        self.source = source
        self._died_reported = False
        if source is None:
            self.agg.clock = None
            self.status.set_state("stopped", "stopped")
            return
        self.agg.clock = time.time  # live: graphs and rates follow the wall clock
        # the Node column only means something when several hosts feed one table
        self.table.horizontalHeader().setSectionHidden(COLUMN_KEYS.index("node"),
                                                       not hasattr(source, "host_of"))
        source.start()
        self.session_path = None
        self.status.set_source(source.describe())
        self.status.set_state("live", "● live")
        self.events_log.note(f"capturing: {source.describe()}")
        self.setWindowTitle(f"{self.base_title} — {source.describe()}")

    def stop_capture(self) -> None:
        """Stop the source; what was captured stays on screen."""
        if self.source is not None:
            self.ingest()
            self.source.stop()
            self.events_log.note("capture stopped")
        self.agg.clock = None  # graphs freeze on what was captured
        self.status.set_state("stopped", "■ stopped")

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

    # -- the live feed ---------------------------------------------------------------

    def _tick(self) -> None:
        """One frame: ingest on even frames; graphs or panels on some odd frames."""
        k = self._frame = self._frame + 1
        if k % INGEST_EVERY == 0:
            self.ingest()
        elif k % GRAPH_EVERY == GRAPH_PHASE:
            self.refresh_graphs()
        elif k % PANEL_EVERY == PANEL_PHASE:
            self.refresh_panels()

    def ingest(self) -> None:
        """Drain the source: append the batch, feed the aggregates, log events."""
        src = self.source
        if src is None:
            return
        exchanges, events, stats = src.poll()
        header = getattr(src, "header", None)
        if header is not None and header is not self._redaction_header:
            self._redaction_header = header
            self.status.set_redaction(header.get("target"))
        if events:
            self.show_events(events)
        if stats is not None:
            self._last_stats = stats
            self.counted.take(stats)
        if exchanges:
            if self.paused:  # a frozen view: table and graphs wait
                self._pending.extend(exchanges)
                self._pending_agg.extend(exchanges)
            elif self.model.sorted:  # graphs stay live, the sorted table waits
                self.agg.feed(exchanges)
                self._pending.extend(exchanges)
            else:
                self._append(exchanges)
            for held in (self._pending, self._pending_agg):
                excess = len(held) - self.store.capacity
                if excess > 0:
                    del held[:excess]
        if not src.alive() and not self._died_reported and self.status.state_kind == "live":
            self._died_reported = True
            self.agg.clock = None
            err = src.error()
            if err:
                why = err if err.startswith("not authorized") else f"helper died: {err}"
                self.status.set_state("died", f"✖ {why}")
                self.events_log.note(f"capture ended: {err}")
            else:
                self.status.set_state("stopped", "■ stopped")

    def _append(self, exchanges: list[Exchange], *, feed: bool = True) -> None:
        sb = self.table.verticalScrollBar()
        follow = self.autoscroll and sb.value() >= sb.maximum() - 2
        self.model.append_batch(exchanges)
        self._upstream_fit = fit_upstream_column(self.table, exchanges, self._upstream_fit)
        if feed:
            self.agg.feed(exchanges)
        # The store holds millions of objects with no cycles: keep the cyclic GC from
        # re-scanning them (a full collection over 200k exchanges stalls the loop for
        # ~100 ms+). Evicted exchanges are still freed by reference counting.
        gc.freeze()
        if follow:
            self.table.scrollToBottom()

    def _scrolled(self, _value: int) -> None:
        pass  # auto-scroll is decided per batch from the scroll position

    def set_paused(self, paused: bool) -> None:
        """Freeze the view (data keeps arriving and is shown on resume)."""
        if paused == self.paused:
            return
        self.paused = paused
        self.pause_action.setChecked(paused)
        self._flush_pending()
        self._show_state()

    def _sort_changed(self, column: int, _order: Qt.SortOrder) -> None:
        """Sorted views hold live rows back; arrival order shows them again."""
        if column < 0 or column >= len(COLUMNS):
            self._flush_pending()
            self.table.scrollToBottom()
        self._show_state()

    def _flush_pending(self) -> None:
        """Show what was held back, as far as the pause/sort state allows."""
        if self.paused:
            return
        held_agg, self._pending_agg = self._pending_agg, []
        if held_agg:
            self.agg.feed(held_agg)
        if self.model.sorted:
            return
        pending, self._pending = self._pending, []
        if pending:
            self._append(pending, feed=False)

    def _show_state(self) -> None:
        if self.paused:
            extra = f" ({len(self._pending):,} waiting)" if self._pending else ""
            self.status.set_state("paused", f"❚❚ paused{extra}")
        elif self.model.sorted:
            name = COLUMNS[self.model.sort_column][1]
            self.status.set_state(
                "paused", f"sorted by {name}: {len(self._pending):,} new held "
                "(click the header until unsorted to go live)")
        elif self.source is not None and self.source.alive():
            self.status.set_state("live", "● live")
        elif self.source is not None:
            if self.status.state_kind != "died":
                self.status.set_state("stopped", "■ stopped")
        else:
            self.status.set_state("session" if self.session_path else "idle",
                                  "session file" if self.session_path else "no capture")

    def toggle_pause(self) -> None:
        self.set_paused(not self.paused)

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
