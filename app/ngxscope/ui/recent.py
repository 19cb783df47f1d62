"""Recently opened or saved session files (QSettings), and opening files dropped on the window."""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMenu

__all__ = ["MAX_RECENT", "DropOpener", "add_recent", "fill_recent_menu", "recent_files"]

MAX_RECENT = 8
KEY = "files/recent"
OPENABLE = (".ngxs", ".har", ".json")


def recent_files(settings: QSettings) -> list[str]:
    value: Any = settings.value(KEY, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, str) and os.path.exists(p)]


def add_recent(settings: QSettings, path: str) -> None:
    path = os.path.abspath(path)
    files = [p for p in recent_files(settings) if p != path]
    settings.setValue(KEY, [path, *files][:MAX_RECENT])


def fill_recent_menu(menu: QMenu, win: Any) -> None:
    """Rebuild File → Open Recent from the settings (called when the menu is about to show)."""
    menu.clear()
    files = recent_files(win.settings)
    if not files:
        menu.addAction("(none)").setEnabled(False)
        return
    for i, path in enumerate(files, 1):
        act = menu.addAction(f"&{i} {os.path.basename(path)}")
        act.setToolTip(path)
        act.triggered.connect(lambda _=False, p=path: win.open_session_requested.emit(p))
    menu.addSeparator()
    menu.addAction("Clear list").triggered.connect(lambda: win.settings.setValue(KEY, []))


class DropOpener:
    """Mixed into MainWindow: a session or HAR file dropped on the window is opened."""

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if any(u.isLocalFile() and u.toLocalFile().lower().endswith(OPENABLE) for u in urls):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        for u in event.mimeData().urls():
            if u.isLocalFile() and u.toLocalFile().lower().endswith(OPENABLE):
                self.open_session_requested.emit(u.toLocalFile())  # type: ignore[attr-defined]
                event.acceptProposedAction()
                return
