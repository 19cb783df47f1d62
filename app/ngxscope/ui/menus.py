"""Menus, actions and shortcuts of the main window (File / View / Capture / Help)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QGuiApplication,
    QIcon,
    QKeySequence,
    QPalette,
    QPixmap,
)
from PySide6.QtWidgets import QApplication, QFileDialog, QInputDialog, QMenu, QMessageBox

from ngxscope import __version__
from ngxscope.model import MARKS, Exchange
from ngxscope.store.foreign import FILE_FILTERS
from ngxscope.store.session import SessionError, SessionReader

from .attach import AttachDialog
from .baselinemenu import SESSION_FILTER, add_baseline_menu
from .compare import CompareDialog
from .copymenu import fill_copy_menu
from .exportdialog import ExportDialog
from .helpdialog import HelpDialog
from .recent import fill_recent_menu
from .remote import attach_remote as remote_dialog
from .tablemodel import COLUMNS, FILTER_ROLE, MARK_COLORS
from .windowbase import WindowBase

__all__ = ["SESSION_FILTER", "build_menus", "cell_menu", "columns_menu", "dark_palette",
           "edit_note", "set_theme"]

OPEN_FILTER = ("ngxscope sessions, HAR, packet captures (*.ngxs *.har *.json *.pcap *.pcapng *.cap)"
               ";;ngxscope sessions (*.ngxs);;" + ";;".join(FILE_FILTERS) + ";;All files (*)")
THEMES = (("Follow system", Qt.ColorScheme.Unknown), ("Light", Qt.ColorScheme.Light),
          ("Dark", Qt.ColorScheme.Dark))


def dark_palette() -> QPalette:
    """A dark Fusion palette, for platforms whose theme cannot switch scheme itself."""
    pal = QPalette()
    role = QPalette.ColorRole
    for r, color in (
        (role.Window, "#2b2d31"), (role.WindowText, "#e6e6e6"), (role.Base, "#1e1f22"),
        (role.AlternateBase, "#26282c"), (role.ToolTipBase, "#3a3d42"),
        (role.ToolTipText, "#f0f0f0"), (role.Text, "#e6e6e6"), (role.Button, "#35373c"),
        (role.ButtonText, "#e6e6e6"), (role.BrightText, "#ff6b6b"), (role.Link, "#6cb4ff"),
        (role.Highlight, "#2f6fb5"), (role.HighlightedText, "#ffffff"),
        (role.PlaceholderText, "#8a8f98"), (role.Mid, "#45484e"), (role.Dark, "#18191b"),
        (role.Light, "#4a4d53"), (role.Midlight, "#3c3f44"), (role.Shadow, "#000000"),
    ):
        pal.setColor(r, QColor(color))
    for r in (role.WindowText, role.Text, role.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, r, QColor("#7a7e85"))
    return pal


def set_theme(scheme: Qt.ColorScheme) -> None:
    """Force light/dark, or follow the system (Unknown)."""
    hints = QGuiApplication.styleHints()
    app = QApplication.instance()
    if scheme == Qt.ColorScheme.Unknown:
        hints.unsetColorScheme()
        if isinstance(app, QApplication):
            app.setPalette(QPalette())
        return
    hints.setColorScheme(scheme)
    if hints.colorScheme() == scheme or not isinstance(app, QApplication):
        return
    # the platform theme ignored the request (offscreen, minimal desktops): do it by hand
    style = app.style()
    app.setPalette(dark_palette() if scheme == Qt.ColorScheme.Dark else style.standardPalette())


def _action(w: WindowBase, text: str, slot: Any,
            shortcut: str | QKeySequence | QKeySequence.StandardKey | None = None,
            *, checkable: bool = False, tip: str = "") -> QAction:
    act = QAction(text, w)
    if shortcut is not None:
        act.setShortcut(QKeySequence(shortcut))
    act.setCheckable(checkable)
    if tip:
        act.setStatusTip(tip)
    act.triggered.connect(slot)
    w.addAction(act)  # shortcuts work even with the menu bar hidden
    return act


def compare_with(w: WindowBase, path: str) -> CompareDialog | None:
    """Show the window's exchanges against the session at `path` (a clear message if unreadable)."""
    try:
        baseline = SessionReader(path).read_all().exchanges
    except (SessionError, OSError) as exc:
        QMessageBox.warning(w, "Compare with", f"Cannot read {path}: {exc}")
        return None
    dlg = CompareDialog(baseline, list(w.store), path, getattr(getattr(w, "routes", None), "templater", None), w)
    dlg.show()
    return dlg


def build_menus(w: WindowBase) -> None:
    """Create the menu bar and keep references to stateful actions on `w`."""
    bar = w.menuBar()

    def open_file() -> None:
        path, _ = QFileDialog.getOpenFileName(w, "Open a session, HAR or packet capture", "",
                                              OPEN_FILTER)
        if path:
            w.open_session_requested.emit(path)

    def save_as() -> None:
        path, _ = QFileDialog.getSaveFileName(w, "Save session", w.session_path or
                                              "capture.ngxs", SESSION_FILTER)
        if path:
            w.session_path = path
            w.save_requested.emit(path)

    def save() -> None:
        if w.session_path:
            w.save_requested.emit(w.session_path)
        else:
            save_as()

    def export() -> None:
        dlg = ExportDialog(w, shown=w.proxy.rowCount(), total=len(w.store),
                           filter_text=w.filter_bar.edit.text())
        if dlg.exec() and dlg.path:
            w.export_requested.emit(dlg.path, dlg.fmt, dlg.filtered, dlg.redact)

    def compare() -> None:
        path, _ = QFileDialog.getOpenFileName(w, "Compare with session (baseline)", "", SESSION_FILTER)
        if path:
            compare_with(w, path)

    file_menu = bar.addMenu("&File")
    file_menu.addAction(_action(w, "&Open…", open_file, QKeySequence.StandardKey.Open))
    recent_menu = file_menu.addMenu("Open &Recent")
    recent_menu.aboutToShow.connect(lambda: fill_recent_menu(recent_menu, w))
    file_menu.addAction(_action(w, "&Save", save, QKeySequence.StandardKey.Save))
    file_menu.addAction(_action(w, "Save &As…", save_as, "Ctrl+Shift+S"))
    file_menu.addAction(_action(w, "&Export…", export, "Ctrl+E"))
    file_menu.addAction(_action(w, "&Compare with…", compare, "Ctrl+D",
                                tip="This window's requests against a saved session as the baseline"))
    add_baseline_menu(w, file_menu)
    file_menu.addSeparator()
    file_menu.addAction(_action(w, "&Quit", w.close, QKeySequence.StandardKey.Quit))

    view = bar.addMenu("&View")
    cols = view.addMenu("&Columns")
    cols.aboutToShow.connect(lambda: w.columns_menu(cols))
    view.addAction(_action(w, "&Filter", w.find_or_filter, QKeySequence.StandardKey.Find,
                           tip="Focus the filter (in the detail pane: find in it)"))
    view.addAction(_action(w, "Find in &details", w.find_bar.open_bar, "Ctrl+Shift+F",
                           tip="Highlight a text or expression in the request and response"))
    w.autoscroll_action = _action(w, "&Auto-scroll", lambda on: setattr(w, "autoscroll", on),
                                  checkable=True)
    w.autoscroll_action.setChecked(True)
    view.addAction(w.autoscroll_action)
    view.addSeparator()
    for key in ("graphs", "workers", "upstreams", "routes", "slowest", "tls", "events"):
        view.addAction(w.docks[key].toggleViewAction())
    window_menu = view.addMenu("Graph &window")
    group = QActionGroup(w)
    for i in range(w.graphs.window_box.count()):
        act = QAction(w.graphs.window_box.itemText(i), w, checkable=True)
        act.setChecked(i == w.graphs.window_box.currentIndex())
        act.triggered.connect(lambda _=False, i=i: w.graphs.window_box.setCurrentIndex(i))
        group.addAction(act)
        window_menu.addAction(act)
    w.graphs.window_box.currentIndexChanged.connect(lambda i: group.actions()[i].setChecked(True))
    theme_menu = view.addMenu("&Theme")
    theme_group = QActionGroup(w)
    saved = str(w.settings.value("view/theme", "system"))

    def choose(scheme: Qt.ColorScheme, key: str) -> None:
        set_theme(scheme)
        w.settings.setValue("view/theme", key)

    for (name, scheme), key in zip(THEMES, ("system", "light", "dark"), strict=True):
        act = QAction(name, w, checkable=True)
        act.setChecked(key == saved)
        act.triggered.connect(lambda _=False, s=scheme, k=key: choose(s, k))
        theme_group.addAction(act)
        theme_menu.addAction(act)
        if key == saved and key != "system":
            set_theme(scheme)

    def attach() -> None:
        dlg = AttachDialog(w)
        if dlg.exec() and dlg.selected_pid is not None:
            w.attach(dlg.selected_pid)

    capture = bar.addMenu("&Capture")
    capture.addAction(_action(w, "&Attach…", attach, "Ctrl+Shift+A",
                              tip="Choose a running nginx to capture"))
    w.pause_action = _action(w, "&Pause", lambda: w.toggle_pause(), "Space", checkable=True)
    w.pause_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    capture.addAction(w.pause_action)
    def attach_remote() -> None:
        remote_dialog(w)

    capture.addAction(_action(w, "&Remote host…", attach_remote, "Ctrl+Shift+R",
                              tip="Capture an nginx on another machine over SSH"))
    capture.addAction(_action(w, "&Stop", w.stop_capture, tip="Stop capturing, keep the data"))
    capture.addAction(_action(w, "C&lear", w.clear, "Ctrl+L"))

    def about() -> None:
        QMessageBox.about(w, "About ngxscope",
                          f"<b>ngxscope {__version__}</b><br>Every HTTP request a running nginx "
                          "handles, live, captured with eBPF — no proxy, no keys.")

    help_menu = bar.addMenu("&Help")
    help_menu.addAction(_action(w, "&Filter language and keys", lambda: HelpDialog(w).exec(),
                                QKeySequence.StandardKey.HelpContents))
    help_menu.addAction(_action(w, "&About ngxscope", about))


def cell_menu(w: WindowBase, index: QModelIndex) -> QMenu | None:
    """Right-click on a table cell: filter by / exclude its value, copy it or the URL."""
    if not index.isValid():
        return None
    clause = w.proxy.data(index, FILTER_ROLE)
    value = w.proxy.data(index, Qt.ItemDataRole.DisplayRole) or ""
    menu = QMenu(w)
    if clause:
        menu.addAction(f"Filter by this value:  {clause}", lambda: w.filter_bar.add_clause(clause))
        menu.addAction(f"Exclude this value:  not {clause}",
                       lambda: w.filter_bar.add_clause(f"not {clause}"))
        menu.addAction("Show only this value (replace the filter)",
                       lambda: w.filter_bar.set_text(clause))
        menu.addSeparator()
    menu.addAction("Copy value", lambda: QGuiApplication.clipboard().setText(str(value)))
    ex = w.proxy.exchange_at(index)
    if ex is not None:
        url = f"{'https' if ex.tls else 'http'}://{ex.host}{ex.target}"
        menu.addAction("Copy URL", lambda: QGuiApplication.clipboard().setText(url))
        chosen = w.selected_exchanges()
        if ex not in chosen:
            chosen = [ex]
        sub = menu.addMenu(f"Copy {len(chosen)} requests as" if len(chosen) > 1 else "Copy as")
        fill_copy_menu(sub, chosen, w.status.redaction_target)
        if len(chosen) > 1:
            menu.addAction(f"Replay {len(chosen)} requests…", lambda: w.replay_many(chosen))
        else:
            menu.addAction("Replay…", lambda: w.replay(ex))
        menu.addSeparator()
        marks = menu.addMenu(f"Mark {len(chosen)} rows" if len(chosen) > 1 else "Mark")
        for color in MARKS:
            act = marks.addAction(_swatch(color), color.title())
            act.triggered.connect(lambda _=False, c=color: w.set_mark(chosen, c))
        marks.addSeparator()
        marks.addAction("Clear mark", lambda: w.set_mark(chosen, ""))
        menu.addAction("Note…" if not ex.note else "Edit note…", lambda: edit_note(w, chosen))
    return menu


def _swatch(color: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(MARK_COLORS[color].rgb()))
    return QIcon(pix)


def edit_note(w: WindowBase, exchanges: list[Exchange]) -> None:
    """Ask for a note and set it on `exchanges` (the first one's note is the default)."""
    text, ok = QInputDialog.getMultiLineText(
        w, "Note", f"Note on {len(exchanges)} request{'s' if len(exchanges) > 1 else ''} "
        "(saved with the session, exported in HAR and JSONL; filter: noted, note~…):",
        exchanges[0].note)
    if ok:
        w.set_note(exchanges, text.strip())


def columns_menu(w: WindowBase, menu: QMenu | None = None) -> QMenu:
    """A menu of checkable actions showing/hiding each table column."""
    menu = menu or QMenu(w)
    menu.clear()
    hh = w.table.horizontalHeader()
    for i, col in enumerate(COLUMNS):
        act = menu.addAction(col[1])
        act.setCheckable(True)
        act.setChecked(not hh.isSectionHidden(i))
        act.toggled.connect(lambda on, i=i: hh.setSectionHidden(i, not on))
    return menu
