"""Starting the window (what `ngxscope.gui` calls once it knows there is a display): on a
capture helper, on remote helpers, or on a saved session; and its File menu hooks.

The window never loads BPF: live captures come from a `ngxscope record --stream` helper.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from ..pipeline.remote import MultiHostSource, RemoteSpec, RemoteStreamSource, remote_source
from ..pipeline.source import StreamSource
from ..store.exporters import export as export_file
from ..store.redact import policy_from_env, redact_exchange
from ..store.session import SessionError, SessionWriter
from .app import ensure_app, run_window
from .mainwindow import MainWindow
from .recent import add_recent
from .remote import RemoteHostDialog
from .sessionload import load_session, load_with_dialog

__all__ = ["connect_file_hooks", "open_remote_window", "open_session_window", "run_gui"]


def connect_file_hooks(win: MainWindow) -> None:
    """Save/Open/Export from the window's menus go through the session store."""

    def save(path: str) -> None:
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
    ensure_app()
    win = MainWindow(None, title=f"ngxscope — {os.path.basename(path)}")
    connect_file_hooks(win)
    result = load_session(win, path)  # a bad file: SessionError, one line from the CLI
    if result.warning:
        print(f"ngxscope: {result.warning}", file=sys.stderr)
    return run_window(None, window=win)


def open_remote_window(specs: Sequence[RemoteSpec]) -> int:
    """`ngxscope --remote ...`: the window on the remote capture(s) (the dialog when no PID)."""
    ensure_app()
    title = "ngxscope - " + ", ".join(s.label for s in specs)
    win = MainWindow(None, title=title)
    connect_file_hooks(win)
    source: RemoteStreamSource | MultiHostSource | None = None
    if all(s.pid is not None for s in specs):
        source = remote_source(specs)
    else:
        dlg = RemoteHostDialog(None, initial=specs[0])
        if not dlg.exec() or dlg.spec is None:
            return 1
        source = remote_source([dlg.spec])
    try:
        return run_window(source, title=title, window=win)
    finally:
        source.stop()
