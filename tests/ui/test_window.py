"""The main window: live ingest (every exchange a row), filter bar, menus, settings, screenshots."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication

from factories import synthetic_history
from ngxscope import gui
from ngxscope.pipeline.synthetic import SyntheticSource, sample_exchange
from ngxscope.store.filterexpr import compile_filter
from ngxscope.ui import app as uiapp
from ngxscope.ui.mainwindow import MainWindow
from ngxscope.ui.tablemodel import COLUMNS, FILTER_ROLE


def run_loop(qtbot, seconds: float, probe_ms: int = 10) -> list[float]:  # type: ignore[no-untyped-def]
    """Run the event loop for `seconds`; return the gaps between probe timer ticks (s)."""
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(probe_ms)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    ticks.append(time.perf_counter())
    timer.start()
    qtbot.wait(int(seconds * 1000))
    timer.stop()
    return [b - a for a, b in itertools.pairwise(ticks)]


class CountingSource(SyntheticSource):
    """SyntheticSource that remembers the id of every exchange it handed to the window."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.handed: list[int] = []

    def poll(self):  # type: ignore[no-untyped-def]
        exchanges, events, stats = super().poll()
        self.handed.extend(ex.id for ex in exchanges)
        return exchanges, events, stats


def test_ingest_20k_per_second_every_exchange_reaches_the_model(qtbot, settings) -> None:  # type: ignore[no-untyped-def]
    """At 20k/s every exchange the source hands over becomes a row (the newest `capacity`
    of them: the model stays bounded), the aggregates count all of them, nothing raises.
    How fast, and how long the event loop stalls meanwhile, is a benchmark:
    bench/ui_ingest.py (timings on a shared machine are not a test)."""
    win = MainWindow(None, title="ngxscope", settings=settings, capacity=5_000)
    qtbot.addWidget(win)
    win.show()
    win.resize(1600, 1000)
    run_loop(qtbot, 0.3)  # first layout/paint of an empty window
    src = CountingSource(20_000)
    win.set_source(src)
    try:
        qtbot.waitUntil(lambda: win.store.total >= 12_000, timeout=60_000)
    finally:
        src.stop()
    run_loop(qtbot, 0.3)  # what the source still held is drained
    win.ingest()
    handed = src.handed
    assert len(handed) == len(set(handed)) >= 12_000
    assert win.agg.total == len(handed)  # every exchange counted in the graphs and panels
    # bounded: the newest `capacity` are the rows, in arrival order (however the polls cut them)
    assert len(win.store) == win.proxy.rowCount() == win.store.capacity
    assert [ex.id for ex in win.store] == handed[-win.store.capacity:]
    assert win.graphs.stack_curves[0].getData()[0] is not None
    win.close()


def test_filter_bar_live_compile_and_apply(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    win: MainWindow = window
    src = SyntheticSource(threaded=False)
    win.model.append_batch(src.generate(2000))
    win.agg.feed(list(win.store))
    bar = win.filter_bar
    bar.edit.setText("status>=")
    assert not bar.valid and bar.error.isVisibleTo(win)
    assert "missing value" in bar.error.text() and "background" in bar.edit.styleSheet()
    bar.set_text("status>=500")
    assert bar.valid and not bar.error.isVisibleTo(win)
    want = sum(1 for e in win.store if (e.status or 0) >= 500)
    assert win.proxy.rowCount() == want > 0
    assert win.agg.total == want
    bar.add_clause("method=GET")
    assert bar.edit.text() == "status>=500 and method=GET"
    bar.set_text("")
    assert win.proxy.rowCount() == 2000
    # typing applies after the debounce
    qtbot.keyClicks(bar.edit, "tls")
    qtbot.waitUntil(lambda: win.filter_text == "tls", timeout=2000)
    assert win.proxy.rowCount() == sum(1 for e in win.store if e.tls)


def test_filter_by_cell_value_and_upstream_click(window) -> None:  # type: ignore[no-untyped-def]
    win: MainWindow = window
    win.model.append_batch(SyntheticSource(threaded=False).generate(500))
    keys = [c[0] for c in COLUMNS]
    idx = win.proxy.index(3, keys.index("host"))
    clause = win.proxy.data(idx, FILTER_ROLE)
    win.filter_bar.add_clause(clause)
    host = win.proxy.exchange_at(idx).host if win.proxy.rowCount() else None
    assert all(win.proxy.exchange_at(win.proxy.index(r, 0)).host == host
               for r in range(win.proxy.rowCount()))
    from ngxscope.ui.menus import cell_menu, columns_menu

    menu = cell_menu(win, win.proxy.index(0, keys.index("status")))
    assert menu is not None
    texts = [a.text() for a in menu.actions()]
    assert texts[0].startswith("Filter by this value:  status=")
    assert "Copy URL" in texts
    assert cell_menu(win, QModelIndex()) is None
    cols = columns_menu(win)
    cols.actions()[1].setChecked(False)
    assert win.table.horizontalHeader().isSectionHidden(1)
    win.agg.feed(list(win.store))
    win.upstreams.refresh(win.agg)
    peer = win.upstreams.items[next(iter(win.upstreams.items))]
    win.upstreams.tree.itemClicked.emit(peer, 0)
    assert win.filter_bar.edit.text() == f"upstream={peer.data(0, Qt.ItemDataRole.UserRole + 11)}"
    group = win.upstreams.groups["(unknown group)"]
    win.upstreams.tree.itemClicked.emit(group, 0)  # a group row is no filter
    assert win.filter_bar.edit.text().startswith("upstream=")


def test_lost_events_warning_and_events_log(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    win: MainWindow = window
    win.set_source(SyntheticSource(500, lose_events=True, threaded=False))
    qtbot.waitUntil(lambda: win.status.lost_total > 0, timeout=4000)
    win.refresh_panels()
    assert "lost" in win.status.lost.text() and "background" in win.status.lost.styleSheet()
    assert "worker started" in win.events_log.toPlainText()
    assert win.status.notice.isVisibleTo(win) and win.status.notice.text().strip()
    assert win.docks["events"].windowTitle().startswith("Events (")


def test_summary_only_requests_are_shown(window, qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """Requests counted from the kernel summary (payload shed or sampled out) are visible."""
    win: MainWindow = window
    assert not win.status.summary_only.isVisibleTo(win)
    win.status.set_stats({"ts": 1.0, "events": 10, "lost": 0, "truncated": 0, "shed_exchanges": 12345,
                          "sample_one_in": 8}, req_rate=20000.0)
    assert win.status.summary_only.isVisibleTo(win)
    assert win.status.summary_only.text().strip() == "12,345 summary only · sampling 1/8"
    assert "CPU budget" in win.status.summary_only.toolTip()
    qtbot.wait(50)   # let the status bar lay out its labels again
    assert win.status.grab().save(str(shots / "statusbar-summary-only.png"))


def test_load_session_hooks_and_settings(qtbot, settings: QSettings) -> None:  # type: ignore[no-untyped-def]
    win = MainWindow(None, settings=settings)
    qtbot.addWidget(win)
    saved: list[str] = []
    win.save_requested.connect(saved.append)
    exchanges = SyntheticSource(threaded=False).generate(300)
    win.load(exchanges, description="test.ngxs", path="/tmp/test.ngxs")
    assert len(win.store) == 300 and win.status.state_kind == "session"
    assert win.agg.total == 300
    win.select_exchange(exchanges[10])
    assert win.detail.exchange is exchanges[10]
    save = next(a for a in win.actions() if a.text() == "&Save")
    save.trigger()
    assert saved == ["/tmp/test.ngxs"]
    win.table.horizontalHeader().setSectionHidden(2, True)
    win.graphs.set_window(300)
    win.close()
    win2 = MainWindow(None, settings=settings)
    qtbot.addWidget(win2)
    assert win2.table.horizontalHeader().isSectionHidden(2)
    assert win2.graphs.window_s == 300
    shortcuts = {a.shortcut().toString() for a in win2.actions()}
    assert {"Ctrl+O", "Ctrl+S", "Ctrl+F", "Space", "Ctrl+L", "F1"} <= shortcuts


def test_no_display_reason(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    reason = gui.no_display_reason()
    assert reason is not None and "ngxscope record" in reason
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert gui.no_display_reason() is None
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    assert gui.no_display_reason() is None


@pytest.mark.parametrize("theme", ["light"])
def test_screenshot_main_window(qtbot, settings: QSettings, shots: Path, theme: str) -> None:  # type: ignore[no-untyped-def]
    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.resize(1600, 1000)
    win.show()
    # 5 minutes of history so the graphs have shape, then a few seconds live
    history = synthetic_history(300, lambda k: int(260 + 160 * (k % 60 < 12) + 60 * (k % 7 == 0)), seed=11)
    win.model.append_batch(history)
    win.agg.feed(history)
    win.set_source(SyntheticSource(330, threaded=False))
    qtbot.wait(2500)
    win.graphs.set_window(300)
    rows = win.proxy.rowCount()
    win.table.selectRow(rows - 12)
    win.detail.setCurrentIndex(1)
    win.refresh_graphs()
    win.refresh_panels()
    vb = win.graphs.lat.getPlotItem().getViewBox()
    win.graphs.hovers[1].on_move(vb.sceneBoundingRect().center())
    assert win.graphs.hovers[1].last_text.startswith("p50 ")
    qtbot.wait(200)
    path = shots / "main-window.png"
    assert win.grab().save(str(path))
    win.filter_bar.set_text("status>=500 or duration>300ms")
    win.docks["upstreams"].raise_()
    win.table.selectRow(max(0, win.proxy.rowCount() - 3))
    win.detail.setCurrentIndex(2)
    qtbot.wait(400)
    assert win.grab().save(str(shots / "main-window-filtered.png"))
    win.filter_bar.edit.setText("status>=5xx and (")
    qtbot.wait(50)
    assert win.filter_bar.grab().save(str(shots / "filter-error.png"))
    assert compile_filter("status>=500")(sample_exchange()) is False


def test_run_window_screenshot(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("ngxscope.ui.mainwindow.QSettings",
                        lambda *_a: QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    out = tmp_path / "shot.png"
    code = uiapp.run_window(SyntheticSource(300), title="ngxscope test",
                            screenshot=str(out), after=1.0)
    assert code == 0 and out.stat().st_size > 10_000
    assert QApplication.instance() is not None


def test_screenshot_dark_and_help(qtbot, settings: QSettings, shots: Path) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtWidgets import QTextBrowser

    from ngxscope.ui.helpdialog import HelpDialog
    from ngxscope.ui.menus import set_theme

    set_theme(Qt.ColorScheme.Dark)
    try:
        win = MainWindow(None, title="ngxscope", settings=settings)
        qtbot.addWidget(win)
        win.resize(1600, 1000)
        win.show()
        history = synthetic_history(60, 300, seed=5)
        win.model.append_batch(history)
        win.agg.feed(history)
        win.set_source(SyntheticSource(300, threaded=False))
        qtbot.wait(1500)
        win.table.selectRow(win.proxy.rowCount() - 4)
        win.detail.setCurrentIndex(2)
        win.refresh_graphs()
        win.refresh_panels()
        vb = win.graphs.rps.getPlotItem().getViewBox()
        win.graphs.hovers[0].on_move(vb.sceneBoundingRect().center())
        assert "req/s" in win.graphs.hovers[0].last_text
        qtbot.wait(200)
        assert win.palette().color(win.palette().ColorRole.Window).lightness() < 100
        assert win.grab().save(str(shots / "main-window-dark.png"))
    finally:
        set_theme(Qt.ColorScheme.Unknown)
    dlg = HelpDialog()
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.wait(50)
    browser = dlg.findChild(QTextBrowser)
    assert browser is not None and "duration>200ms" in browser.toPlainText()
    assert dlg.grab().save(str(shots / "help-dialog.png"))


def test_keys_space_in_filter_types_and_ctrl_f_focuses(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    win: MainWindow = window
    win.model.append_batch(SyntheticSource(threaded=False).generate(100))
    find = next(a for a in win.actions() if a.shortcut().toString() == "Ctrl+F")
    find.trigger()
    assert win.filter_bar.edit.hasFocus() or QApplication.focusWidget() is win.filter_bar.edit
    qtbot.keyClicks(win.filter_bar.edit, "not tls")
    assert win.filter_bar.edit.text() == "not tls" and not win.paused
    win.table.setFocus()
    qtbot.keyClick(win.table, Qt.Key.Key_Space)
    assert win.paused
    win.filter_bar.set_text("method=POST")
    assert all(e.method == "POST" for e in win.visible_exchanges())
    assert len(win.visible_exchanges()) == win.proxy.rowCount()


def test_run_window_open_attach(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import ngxscope.ui.mainwindow as mw

    class FakeDialog:
        selected_pid = 4242

        def __init__(self, *_a: object, **_k: object) -> None:
            pass

        def exec(self) -> int:
            return 1

    made: list[int] = []

    def factory(pid: int) -> SyntheticSource:
        made.append(pid)
        return SyntheticSource(100, threaded=False)

    monkeypatch.setattr(uiapp, "AttachDialog", FakeDialog)
    monkeypatch.setattr(mw, "default_source_factory", factory)
    monkeypatch.setattr(mw, "QSettings",
                        lambda *_a: QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    out = tmp_path / "attach.png"
    assert uiapp.run_window(None, open_attach=True, screenshot=str(out), after=0.6) == 0
    assert made == [4242] and out.exists()


def test_worker_colours_stay_distinct_as_workers_appear(qtbot) -> None:  # type: ignore[no-untyped-def]
    from ngxscope.store.aggregate import Aggregator
    from ngxscope.ui.panels import WorkersPanel

    panel = WorkersPanel()
    qtbot.addWidget(panel)
    agg = Aggregator()
    now = time.time()
    first = SyntheticSource(threaded=False).generate(50, now=now, spread=1.0)
    for e in first:
        e.pid = 200
    agg.feed(first)
    panel.refresh(agg, 60)
    later = SyntheticSource(seed=3, threaded=False).generate(50, now=now, spread=1.0)
    for e in later:
        e.pid = 100  # sorts before 200 in the table
    agg.feed(later)
    panel.refresh(agg, 60)
    colours = {pid: c.opts["pen"].color().name() for pid, c in panel.curves.items()}
    assert len(colours) == 2 and colours[100] != colours[200]
