"""File > Compare with…: the window against a saved baseline; screenshot."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSettings

from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.store.session import SessionWriter
from ngxscope.ui.compare import WORSE
from ngxscope.ui.mainwindow import MainWindow
from ngxscope.ui.menus import compare_with


def test_compare_names_what_got_worse(qtbot, settings: QSettings, shots: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                      monkeypatch) -> None:
    now = time.time()
    base = SyntheticSource(seed=21, threaded=False).generate(6000, now=now - 600, spread=60.0)
    current = SyntheticSource(seed=22, threaded=False).generate(6000, now=now, spread=60.0)
    for ex in current:
        if ex.path == "/api/v1/cart":
            ex.start -= 0.08  # 80 ms slower now
    path = tmp_path / "baseline.ngxs"
    with SessionWriter(path, {"pid": 0}) as w:
        for ex in base:
            w.write_exchange(ex)
    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.model.append_batch(current)
    dlg = compare_with(win, str(path))
    assert dlg is not None
    qtbot.addWidget(dlg)
    routes = [r for r in dlg.rows if r.dimension == "route"]
    assert routes[0].key == "/api/v1/cart" and routes[0].significant
    branch = next(dlg.tree.topLevelItem(i) for i in range(dlg.tree.topLevelItemCount())
                  if dlg.tree.topLevelItem(i).text(0).startswith("route"))
    assert branch.child(0).text(0) == "/api/v1/cart" and branch.child(0).foreground(0).color() == WORSE
    qtbot.wait(200)
    assert dlg.grab().save(str(shots / "compare-dialog.png"))
    from PySide6.QtWidgets import QMessageBox
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    assert compare_with(win, str(tmp_path / "missing.ngxs")) is None and "missing.ngxs" in shown[0]
