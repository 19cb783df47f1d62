"""Starting the window for the CLI: its source (a capture helper) and its File menu hooks.

The window never loads BPF: live captures come from a `ngxscope record --stream` helper.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["connect_file_hooks", "open_session_window", "run_gui"]


def connect_file_hooks(win: Any) -> None:
    """Save/Open/Export from the window's menus go through the session store."""
    from PySide6.QtWidgets import QMessageBox

    from ..store.session import SessionError, SessionWriter
    from .recent import add_recent

    def save(path: str) -> None:
        from ..store.redact import policy_from_env, redact_exchange

        policy = policy_from_env()  # saves mask secrets, like exports (and like record)
        try:
            target = {"saved_from": "window", "source": win.windowTitle(), "redacted": policy.active,
                      "redact_headers": sorted(policy.headers), "redact_params": sorted(policy.params)}
            with SessionWriter(path, target, overwrite=True) as writer:
                for ex in list(win.store):
                    writer.write_exchange(redact_exchange(ex, policy))
                for ev in list(getattr(win, "events", [])):
                    writer.write_event(ev)
            win.session_path = path
            add_recent(win.settings, path)
            win.statusBar().showMessage(f"saved {len(win.store)} exchanges to {path} (secrets masked)", 5000)
        except (SessionError, OSError) as exc:
            QMessageBox.critical(win, "Save failed", str(exc))

    def export(path: str, fmt: str, filtered: bool, redact: bool) -> None:
        import tempfile

        from ..store.exporters import export as export_file

        exchanges = win.visible_exchanges() if filtered else list(win.store)
        try:
            with tempfile.TemporaryDirectory(prefix="ngxscope-export-") as tmp:
                staged = os.path.join(tmp, "view.ngxs")
                with SessionWriter(staged, {"exported_from": "window"}) as writer:
                    for ex in exchanges:
                        writer.write_exchange(ex)
                notes: list[str] = []
                n = export_file(staged, fmt, path, redact=redact, notes=notes)
            win.statusBar().showMessage(f"exported {n:,} exchanges to {path}"
                                        + ("" if redact else " (not redacted)")
                                        + "".join(f"; {note}" for note in notes), 8000)
        except (SessionError, OSError) as exc:
            QMessageBox.critical(win, "Export failed", str(exc))

    def open_session(path: str) -> None:
        from .sessionload import load_with_dialog

        if load_with_dialog(win, path) is not None:
            add_recent(win.settings, path)

    win.save_requested.connect(save)
    win.export_requested.connect(export)
    win.open_session_requested.connect(open_session)


def run_gui(
    argv: list[str] | None = None,
    *,
    title: str = "",
    screenshot: str | None = None,
    after: float = 0.0,
    duration: float | None = None,
    open_attach: bool = False,
) -> int:
    """Open the main window, fed by a capture helper started with `argv` (or none)."""
    from PySide6.QtCore import QTimer

    from .app import ensure_app, run_window
    from .mainwindow import MainWindow
    from .source import StreamSource

    ensure_app()
    source = StreamSource(argv) if argv else None
    win = MainWindow(None, title=title or "ngxscope")
    connect_file_hooks(win)
    if duration and not screenshot:
        QTimer.singleShot(int(duration * 1000), win.close)
    if screenshot:
        # a picture has a fixed size, whatever a small (offscreen) screen or saved layout says
        win.resize(1600, 1000)
    try:
        return run_window(source, title=title, screenshot=screenshot, after=after,
                          open_attach=open_attach, window=win)
    finally:
        if source is not None:
            source.stop()


def open_session_window(path: str) -> int:
    """`ngxscope open FILE`: the session in the window (a bad file: one line, exit 1)."""
    from .app import ensure_app, run_window
    from .mainwindow import MainWindow
    from .sessionload import load_session

    ensure_app()
    win = MainWindow(None, title=f"ngxscope — {os.path.basename(path)}")
    connect_file_hooks(win)
    result = load_session(win, path)  # a bad file: SessionError, one line from the CLI
    if result.warning:
        print(f"ngxscope: {result.warning}", file=sys.stderr)
    return run_window(None, window=win)
