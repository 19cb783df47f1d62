"""Opening a session file in the window: streamed, with progress and cancel, bounded memory.

Every exchange feeds the graphs' and panels' aggregates; only the newest `store.capacity`
stay in memory as table rows (older ones remain in the file), so a 1,000,000-exchange
session opens without holding a million objects.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

from ..model import Exchange, LifecycleEvent
from ..store.session import ReadCancelled, SessionReader

__all__ = ["BATCH", "LoadResult", "load_session"]

BATCH = 5000
"""Exchanges fed to the aggregates at a time."""


class LoadResult:
    """What was read: counts and the reader's warning (truncated file...)."""

    def __init__(self, total: int, kept: int, warning: str | None) -> None:
        self.total = total
        self.kept = kept
        self.warning = warning


def load_session(
    win: Any,
    path: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> LoadResult:
    """Stream `path` into the MainWindow `win` (raises SessionError / ReadCancelled)."""
    reader = SessionReader(path)
    tail: deque[Exchange] = deque(maxlen=win.store.capacity)
    events: list[LifecycleEvent] = []
    batch: list[Exchange] = []
    win.stop_capture()
    win.agg.reset()
    total = 0
    for rec in reader.iter_records(progress=progress, cancelled=cancelled):
        if isinstance(rec, Exchange):
            batch.append(rec)
            if len(batch) >= BATCH:
                win.agg.feed(batch)
                tail.extend(batch)
                total += len(batch)
                batch = []
        elif isinstance(rec, LifecycleEvent):
            events.append(rec)
    if batch:
        win.agg.feed(batch)
        tail.extend(batch)
        total += len(batch)
    name = os.path.basename(path)
    desc = f"session {name}" + (f" (newest {len(tail):,} of {total:,} in the table)" if total > len(tail) else "")
    win.load(list(tail), events, description=desc, path=path, aggregated=True)
    win.status.set_redaction(reader.header.get("target"))
    return LoadResult(total, len(tail), reader.warning)


def load_with_dialog(win: Any, path: str) -> LoadResult | None:
    """load_session behind a progress dialog with Cancel; errors shown in a message box."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QMessageBox, QProgressDialog

    from ..store.session import SessionError

    size = max(1, os.path.getsize(path)) if os.path.exists(path) else 1
    dlg = QProgressDialog(f"Reading {os.path.basename(path)}…", "Cancel", 0, 1000, win)
    dlg.setWindowTitle("Opening session")
    dlg.setWindowModality(Qt.WindowModality.WindowModal)
    dlg.setMinimumDuration(300)

    def progress(done: int, total: int) -> None:
        dlg.setValue(int(1000 * done / max(total or size, 1)))
        QApplication.processEvents()

    try:
        result = load_session(win, path, progress=progress, cancelled=dlg.wasCanceled)
    except ReadCancelled:
        dlg.close()
        win.statusBar().showMessage("opening cancelled", 5000)
        return None
    except (SessionError, OSError) as exc:
        dlg.close()
        QMessageBox.critical(win, "Cannot open session", str(exc))
        return None
    dlg.close()
    if result.warning:
        QMessageBox.warning(win, "Session incomplete", result.warning)
    return result
