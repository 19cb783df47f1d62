"""What the menus (`ui.menus`) know of the main window: its signals, the widgets and state
they act on, and the actions they trigger. `MainWindow` fills it in; the menus import this,
not the window, so the two modules do not import each other."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog, QDockWidget, QMainWindow, QMenu, QTableView

from ngxscope.model import Exchange
from ngxscope.store.baseline import BaselinePin
from ngxscope.store.diff import DiffRow
from ngxscope.store.memory import ExchangeStore

from .filterbar import FilterBar
from .findbar import FindBar
from .graphs import GraphsPanel
from .statusbar import CaptureStatusBar
from .tablemodel import ExchangeFilterProxy

__all__ = ["WindowBase"]


class WindowBase(QMainWindow):
    """The main window as its menus see it."""

    open_session_requested = Signal(str)
    """File → Open… chose a session file (connect to the session reader, then `load`)."""
    save_requested = Signal(str)
    """File → Save / Save As… chose a path (write `self.store` / `self.events` there)."""
    export_requested = Signal(str, str, bool, bool)
    """File → Export… chose (path, format, filtered view only, redact)."""
    attach_requested = Signal(int)
    """Capture → Attach… chose an nginx pid (before `source_factory` is used)."""

    settings: QSettings
    store: ExchangeStore
    session_path: str | None
    proxy: ExchangeFilterProxy
    filter_bar: FilterBar
    table: QTableView
    graphs: GraphsPanel
    docks: dict[str, QDockWidget]
    pause_action: QAction
    autoscroll_action: QAction
    find_bar: FindBar
    status: CaptureStatusBar
    baseline: BaselinePin | None = None
    """The pinned baseline (File ▸ Pin baseline; ui.baselinemenu), None when none."""
    baseline_checked: float = 0.0
    """time.monotonic() of the panels' last judgement against it."""
    baseline_verdicts: dict[tuple[str, str], DiffRow] = {}
    """That judgement: (dimension, key) → the row of the recent minute against the baseline."""

    def toggle_pause(self) -> None:
        raise NotImplementedError

    def stop_capture(self) -> None:
        raise NotImplementedError

    def attach(self, pid: int) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def columns_menu(self, menu: QMenu | None = None) -> QMenu:
        raise NotImplementedError

    def selected_exchanges(self) -> list[Exchange]:
        raise NotImplementedError

    def set_mark(self, exchanges: list[Exchange], mark: str) -> None:
        raise NotImplementedError

    def set_note(self, exchanges: list[Exchange], note: str) -> None:
        raise NotImplementedError

    def replay(self, ex: Exchange | None) -> QDialog | None:
        raise NotImplementedError

    def replay_many(self, exchanges: list[Exchange]) -> QDialog:
        raise NotImplementedError

    def find_or_filter(self) -> None:
        raise NotImplementedError
