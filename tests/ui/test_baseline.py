"""File ▸ Pin baseline: the first five minutes of the capture pinned live; the Routes
(by route and by location) and Upstreams panels tint what got significantly worse in the
last minute, and the Compare view names it first; screenshots."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QColor

from ngxscope.model import Exchange
from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.ui.baselinemenu import compare_with_pinned, pin_first_minutes, pin_session, unpin
from ngxscope.ui.compare import WORSE
from ngxscope.ui.mainwindow import MainWindow
from ngxscope.ui.upstreams import WORSE_BG

SLOW_ROUTE = "/api/v1/cart"


def _traffic(now: float) -> tuple[list[Exchange], str]:
    """Ten minutes of traffic: the first five as they were, the last minute with SLOW_ROUTE
    80 ms slower and one peer's attempts 60 ms slower (returned)."""
    src = SyntheticSource(seed=31, threaded=False)
    early = src.generate(9000, now=now - 300, spread=300.0)
    late = src.generate(3000, now=now, spread=60.0)
    peers = sorted({a.addr for ex in late for a in ex.upstream})
    slow_peer = peers[0]
    for ex in late:
        if ex.path == SLOW_ROUTE:
            ex.start -= 0.08
        for att in ex.upstream:
            if att.addr == slow_peer and att.duration_ms is not None:
                att.duration_ms += 60.0
    return early + late, slow_peer


def _worse(cell_bg: QColor) -> bool:
    return cell_bg == WORSE_BG


def test_pinned_first_minutes_tint_what_got_worse(qtbot, settings: QSettings, shots: Path,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    now = time.time()
    exchanges, slow_peer = _traffic(now)
    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.resize(1500, 900)
    win.show()
    win.model.append_batch(exchanges)
    win.agg.feed(exchanges)
    pin = pin_first_minutes(win)
    assert pin is not None and win.baseline is pin and pin.span is not None
    assert pin.name == "the first 5 min of this capture"
    assert all(pin.span[0] <= ex.start < pin.span[1] for ex in pin.exchanges) and len(pin.exchanges) > 7000
    win.docks["routes"].raise_()
    qtbot.wait(100)
    win.refresh_panels()
    rows = [r.template for r in win.routes.rows]
    worse = {rows[i] for i in range(len(rows)) if _worse(win.routes.table.item(i, 0).background().color())}
    assert worse == {SLOW_ROUTE}, worse
    tip = win.routes.table.item(rows.index(SLOW_ROUTE), 0).toolTip()
    assert "worse than the baseline (the first 5 min of this capture)" in tip and "Mann-Whitney" in tip
    assert "1 worse" in win.routes.baseline_label.text()
    qtbot.wait(200)
    assert win.docks["routes"].grab().save(str(shots / "routes-baseline.png"))
    # grouped by location: the slowed route's location, and none other
    win.routes.group.setCurrentIndex(1)
    win.refresh_panels()
    rows = [r.template for r in win.routes.rows]
    worse = {rows[i] for i in range(len(rows)) if _worse(win.routes.table.item(i, 0).background().color())}
    slow_locs = {f"{ex.server_block} \u203a {ex.location}" for ex in exchanges if ex.path == SLOW_ROUTE}
    assert worse and worse <= slow_locs, (worse, slow_locs)
    assert win.routes.table.horizontalHeaderItem(0).text() == "Location"
    qtbot.wait(200)
    assert win.docks["routes"].grab().save(str(shots / "locations-baseline.png"))
    # the slowed peer in the Upstreams panel
    win.docks["upstreams"].raise_()
    qtbot.wait(100)
    win.refresh_panels()
    tinted = {addr for (_g, addr), item in win.upstreams.items.items() if _worse(item.background(0).color())}
    assert tinted == {slow_peer}, tinted
    qtbot.wait(200)
    assert win.docks["upstreams"].grab().save(str(shots / "upstreams-baseline.png"))
    # the Compare view: the rest of the capture against the pinned minutes
    dlg = compare_with_pinned(win)
    assert dlg is not None
    qtbot.addWidget(dlg)
    routes = [r for r in dlg.rows if r.dimension == "route"]
    assert routes[0].key == SLOW_ROUTE and routes[0].worse
    peers = [r for r in dlg.rows if r.dimension == "upstream peer"]
    assert peers[0].key == slow_peer and peers[0].worse
    branch = next(dlg.tree.topLevelItem(i) for i in range(dlg.tree.topLevelItemCount())
                  if dlg.tree.topLevelItem(i).text(0).startswith("route"))
    assert branch.child(0).text(0) == SLOW_ROUTE and branch.child(0).foreground(0).color() == WORSE
    qtbot.wait(200)
    assert dlg.grab().save(str(shots / "compare-pinned.png"))
    # unpinned: nothing tinted
    unpin(win)
    assert win.baseline is None
    win.routes.group.setCurrentIndex(0)
    win.refresh_panels()
    assert not any(_worse(win.routes.table.item(i, 0).background().color()) for i in range(win.routes.table.rowCount()))


def test_pinning_an_unreadable_session_says_why(qtbot, settings: QSettings, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: shown.append(a[2]))
    assert pin_session(win, str(tmp_path / "missing.ngxs")) is None and "missing.ngxs" in shown[0]
    assert pin_first_minutes(win) is None and "No requests" in shown[1]  # an empty window
    assert compare_with_pinned(win) is None and "Pin a baseline first" in shown[2]
