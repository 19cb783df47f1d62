"""The window with requests counted in the kernel: the graphs and panels count them, the
status bar says how many are not rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

from ngxscope.capture.kcounts import hist_bucket
from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.ui.mainwindow import MainWindow


class CountingSource:
    """Rows from SyntheticSource, plus a stats record per poll whose kernel counts grow."""

    def __init__(self, rows: list[Exchange]) -> None:
        self.rows = rows
        self.polls = 0
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def alive(self) -> bool:
        return self.running

    def error(self) -> str | None:
        return None

    def describe(self) -> str:
        return "kernel counts"

    def poll(self) -> tuple[list[Exchange], list[LifecycleEvent], dict[str, Any] | None]:
        self.polls += 1
        rows, self.rows = self.rows, []
        n = 2000 * self.polls
        counted = {"requests": n + 40, "rows": [
            {"pid": 4100, "server": "shop", "peer": None, "status": 200, "n": n, "request_length": 0, "bytes_sent": 0},
            {"pid": 4117, "server": "shop", "peer": "10.0.0.7:8080", "status": 404, "n": 40,
             "request_length": 0, "bytes_sent": 0}],
            "hist": [{"pid": 4100, "server": "shop", "peer": None, "class": 2, "which": "request",
                      "buckets": {str(hist_bucket(4000)): n}}]}
        return rows, [], {"ts": time.time(), "events": 0, "lost": 0, "truncated": 0, "shed_exchanges": 3,
                          "sample_one_in": 64, "yielding": True, "counted": counted}


def test_window_counts_kernel_counts_and_says_they_are_not_rows(qtbot, settings: QSettings,  # type: ignore[no-untyped-def]
                                                                 shots: Path) -> None:
    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.resize(1500, 900)
    win.show()
    rows = SyntheticSource(seed=3, threaded=False).generate(50, now=time.time() - 1.5, spread=1.0)
    src = CountingSource(rows)
    win.set_source(src)
    for _ in range(3):
        win.ingest()
        qtbot.wait(50)
    win.refresh_panels()
    win.refresh_graphs()
    n = win.counted.requests   # the window's own timer polls too: as many polls as it made
    assert n == 2000 * src.polls + 40 and src.polls >= 3
    assert win.agg.total == 50 + n
    assert f"{n:,} counted in the kernel, not rows" in win.status.summary_only.text()
    assert "sampling 1/64 (CPU is short: the capture yields)" in win.status.summary_only.text()
    workers = {w.pid: w.requests for w in win.agg.worker_rows()}
    assert workers[4100] - sum(ex.pid == 4100 for ex in rows) == n - 40
    qtbot.wait(200)
    assert win.grab().save(str(shots / "kernel-counts.png"))
    win.set_source(None)


def test_opened_session_counts_what_the_kernel_counted(window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from factories import make_exchange
    from ngxscope.store.session import SessionWriter
    from ngxscope.ui.sessionload import load_session

    path = tmp_path / "counted.ngxs"
    with SessionWriter(path, {}) as w:
        for i in range(20):
            w.write_exchange(make_exchange(pid=4100, start=1000.0 + i, end=1000.1 + i))
        for k, n in enumerate((500, 1500, 1500)):
            w.write_stats({"ts": 1001.0 + k, "requests": 20, "counted": {
                "requests": n, "rows": [{"pid": 4100, "server": "shop", "peer": None, "status": 200, "n": n,
                                         "request_length": 0, "bytes_sent": 0}],
                "hist": [{"pid": 4100, "server": "shop", "peer": None, "class": 2, "which": "request",
                          "buckets": {str(hist_bucket(2000)): n}}]}})
    result = load_session(window, str(path))
    assert result.total == 20 and len(window.store) == 20
    assert window.agg.total == 20 + 1500
    assert window.counted.requests == 1500
    assert "1,500 counted in the kernel, not rows" in window.status.summary_only.text()
