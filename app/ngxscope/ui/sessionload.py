"""Opening a session file in the window: streamed, with progress and cancel, bounded memory.

Every exchange feeds the graphs' and panels' aggregates; only the newest `store.capacity`
stay in memory as table rows (older ones remain in the file), so a 1,000,000-exchange
session opens without holding a million objects. Reading goes through the fast record
path (`store.bulkload`): exchanges that will not be table rows are counted straight from
their decoded records, never built.

`load_session` reads in the calling thread (the `ngxscope open` command line, before the
window shows). `load_with_dialog` (File ▸ Open) reads in a worker thread and feeds the
aggregates from a QTimer in slices of at most `SLICE_S`, so the window keeps repainting and
the progress dialog's Cancel answers at once.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QMessageBox, QProgressDialog

from ..store.bulkload import BATCH, BackgroundScan, Batch, Done, paused_gc, scan
from ..store.foreign import read_foreign
from ..store.session import ReadCancelled, SessionError, SessionReader

__all__ = ["BATCH", "SLICE_S", "TICK_MS", "LoadResult", "load_in_background", "load_session",
           "load_with_dialog"]

SLICE_S = 0.02
"""Longest run of aggregate feeding per timer tick while a worker reads (seconds)."""
TICK_MS = 5
"""Interval of that timer: each tick takes the interpreter lock from the reader."""


class LoadResult:
    """What was read: counts and the reader's warning (truncated file...)."""

    def __init__(self, total: int, kept: int, warning: str | None) -> None:
        self.total = total
        self.kept = kept
        self.warning = warning


def _begin(win: Any) -> bool:
    """Prepare the window for a session; True if exchanges must be built for its filter."""
    win.stop_capture()
    win.agg.reset()
    return win.agg.predicate is not None


def _feed(win: Any, batch: Batch) -> None:
    if batch.exchanges is not None:
        win.agg.feed(batch.exchanges)  # a filter is set: it decides on whole exchanges
    else:
        win.agg.feed_columns(*batch.columns())


def _finish(win: Any, path: str, done: Done) -> LoadResult:
    tail, total = done.tail, done.total
    name = os.path.basename(path)
    desc = f"session {name}" + (f" (newest {len(tail):,} of {total:,} in the table)"
                                if total > len(tail) else "")
    win.load(tail, done.events, description=desc, path=path, aggregated=True)
    win.counted.clear()
    win.counted.take_steps(done.counted, done.stats)   # requests the kernel counted, not rows
    if done.stats is not None:
        win.status.set_stats(done.stats, req_rate=win.agg.rate())
        win.refresh_graphs()
    win.status.set_redaction(done.header.get("target"))
    gc.freeze()  # the kept rows have no cycles: later collections need not walk them
    return LoadResult(total, len(tail), done.warning)


def _load_foreign(win: Any, path: str) -> LoadResult | None:
    """A HAR or packet capture (store/foreign.py) shown whole; None for a native session."""
    session = read_foreign(path)
    if session is None:
        return None
    win.stop_capture()
    name = os.path.basename(path)
    kind = session.header.get("format", "file")
    kept = session.exchanges[-win.store.capacity:]
    tool = session.header.get("tool") or ""
    win.load(kept, description=f"{kind} {name}" + (f" ({tool})" if tool else ""), path=None)
    win.status.set_redaction(None)
    gc.freeze()
    return LoadResult(len(session.exchanges), len(kept), session.warning)


def load_session(
    win: Any,
    path: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> LoadResult:
    """Stream `path` into the MainWindow `win` (raises SessionError / ReadCancelled). A HAR
    or pcap/pcapng file is read whole instead (`store.foreign`)."""
    foreign = _load_foreign(win, path)
    if foreign is not None:
        return foreign
    reader = SessionReader(path)
    full = _begin(win)
    with paused_gc():
        for item in scan(reader, win.store.capacity, full=full, progress=progress,
                         cancelled=cancelled):
            if isinstance(item, Done):
                return _finish(win, path, item)
            _feed(win, item)
    raise AssertionError("scan ended without Done")  # pragma: no cover


def load_in_background(
    win: Any,
    path: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> LoadResult:
    """`load_session` with the reading in a worker thread while this (GUI) thread runs a
    local event loop: a QTimer takes the batches over, at most `SLICE_S` per tick.
    `progress`/`cancelled` are called from the GUI thread."""
    foreign = _load_foreign(win, path)
    if foreign is not None:
        return foreign
    reader = SessionReader(path)  # a file that is no session fails here, before any thread
    full = _begin(win)
    worker = BackgroundScan(reader, win.store.capacity, full=full, depth=max(2, 40_000 // BATCH))
    loop = QEventLoop()
    outcome: list[LoadResult | BaseException] = []
    pause = paused_gc()  # here too: the worker's pause may end before the rows are shown
    pause.__enter__()

    def tick() -> None:
        deadline = time.perf_counter() + SLICE_S
        try:
            if cancelled is not None and cancelled():
                raise ReadCancelled(f"reading {path} was cancelled")
            while time.perf_counter() < deadline:
                item = worker.poll()
                if item is None:
                    break
                if isinstance(item, Done):
                    outcome.append(_finish(win, path, item))
                    break
                _feed(win, item)
            if progress is not None:
                progress(worker.bytes_read, worker.bytes_total)
        except BaseException as exc:  # raised again below, outside the event loop
            outcome.append(exc)
        if outcome:
            timer.stop()
            loop.quit()

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    worker.start()
    timer.start()
    try:
        loop.exec()
    finally:
        timer.stop()
        worker.cancel()
        worker.join(5.0)
        pause.__exit__()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def load_with_dialog(win: Any, path: str) -> LoadResult | None:
    """Open `path` behind a progress dialog with Cancel (reading in the background);
    errors shown in a message box."""
    dlg = QProgressDialog(f"Reading {os.path.basename(path)}…", "Cancel", 0, 1000, win)
    dlg.setWindowTitle("Opening session")
    dlg.setWindowModality(Qt.WindowModality.WindowModal)
    dlg.setMinimumDuration(300)

    def progress(done: int, total: int) -> None:
        dlg.setValue(min(999, int(1000 * done / max(total, 1))))

    try:
        result = load_in_background(win, path, progress=progress, cancelled=dlg.wasCanceled)
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
