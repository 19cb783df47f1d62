"""The QApplication and the window's event loop: `ensure_app`, `run_window`, `grab_png`."""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QWidget

from ..pipeline.source import ExchangeSource
from .attach import AttachDialog
from .icon import app_icon
from .mainwindow import MainWindow

__all__ = ["ensure_app", "grab_png", "run_window"]


def ensure_app() -> QApplication:
    """The QApplication (created with the Fusion style and the ngxscope icon if needed)."""
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    QApplication.setOrganizationName("ngxscope")
    QApplication.setApplicationName("ngxscope")
    QApplication.setDesktopFileName("ngxscope")
    app = QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    app.setWindowIcon(app_icon())
    return app


def grab_png(widget: QWidget, path: str) -> bool:
    """Save `widget` as it is drawn now to the PNG `path` (directories created)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return bool(widget.grab().save(path, "PNG"))


def run_window(
    source: ExchangeSource | None,
    *,
    title: str = "",
    screenshot: str | None = None,
    after: float = 0.0,
    open_attach: bool = False,
    window: MainWindow | None = None,
) -> int:
    """Show the main window fed by `source` and run the event loop. Returns the exit code.

    screenshot: after `after` seconds, save the window to this PNG and quit.
    open_attach: show the Attach… dialog first (when no source is given).
    window: an already-built MainWindow to show (hooks connected by the caller).
    """
    app = ensure_app()
    win = window or MainWindow(source, title=title)
    if window is not None and source is not None:
        win.set_source(source)
    win.show()
    if open_attach and source is None:
        QTimer.singleShot(0, lambda: _attach(win))
    if screenshot:
        def shoot() -> None:
            win.ingest()
            win.refresh_graphs()
            win.refresh_panels()
            ok = grab_png(win, screenshot)
            if not ok:
                print(f"ngxscope: error: cannot write {screenshot}", file=sys.stderr)
            win.close()
            app.exit(0 if ok else 1)

        QTimer.singleShot(int(max(0.0, after) * 1000), shoot)
    return int(app.exec())


def _attach(win: MainWindow) -> None:
    dlg = AttachDialog(win)
    if dlg.exec() and dlg.selected_pid is not None:
        win.attach(dlg.selected_pid)
