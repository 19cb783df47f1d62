"""The main window's live feed: the source it captures from (started, stopped, its death
reported), each frame's poll of it into the table and the aggregates, and the rows held back
while the view is paused or sorted, shown again when it is not. `MainWindow` is one; what it
must provide is declared here, the rest comes from `DockedPanels` and `WindowBase`."""

from __future__ import annotations

import gc
import time
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableView

from ngxscope.model import Exchange
from ngxscope.store.aggcounted import CountedGraphs

from ..pipeline.source import ExchangeSource
from .docks import DockedPanels
from .tablemodel import COLUMN_KEYS, COLUMNS, ExchangeTableModel
from .tableview import fit_upstream_column

__all__ = ["LiveFeed"]


class LiveFeed(DockedPanels):
    """A main window fed by an `ExchangeSource`, one batch per frame."""

    base_title: str
    model: ExchangeTableModel
    table: QTableView
    counted: CountedGraphs
    autoscroll: bool

    def _init_feed(self) -> None:
        self.source: ExchangeSource | None = None
        self.paused = False
        self._pending: list[Exchange] = []
        """Exchanges polled but not yet in the table (paused or sorted)."""
        self._pending_agg: list[Exchange] = []
        """Exchanges polled but not yet in the aggregates (paused)."""
        self._died_reported = False
        self._redaction_header: dict | None = None
        self._last_stats: dict[str, Any] | None = None
        self._upstream_fit = 0
        """Most upstream attempts of one exchange the Upstream column was fitted to."""

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
