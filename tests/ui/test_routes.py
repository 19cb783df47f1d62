"""The Routes panel: templates of the last minute, click to filter; screenshot."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSettings

from factories import synthetic_history
from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.store.routes import RouteTemplater
from ngxscope.ui.mainwindow import MainWindow
from ngxscope.ui.routes import RoutesPanel


def test_routes_panel_rows_click_and_screenshot(qtbot, settings: QSettings, shots: Path) -> None:  # type: ignore[no-untyped-def]
    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.routes.templater = RouteTemplater(["/category/{name}"])  # a user template
    win.resize(1500, 900)
    win.show()
    history = synthetic_history(90, 200, seed=5)
    win.model.append_batch(history)
    win.agg.feed(history)
    win.docks["routes"].raise_()
    qtbot.wait(100)
    win.refresh_panels()
    rows = {r.template: r for r in win.routes.rows}
    assert "/api/v1/items/{id}" in rows and "/category/{name}" in rows
    assert "/assets/img/{slug}" not in rows or rows["/assets/img/{slug}"].requests > 0
    total = sum(r.requests for r in win.routes.rows)
    assert 0 < total <= len(history)
    items = rows["/api/v1/items/{id}"]
    assert items.upstream_share == 1.0 and items.p50 is not None and sum(items.spark) == items.requests
    qtbot.wait(200)
    assert win.docks["routes"].grab().save(str(shots / "routes-panel.png"))
    row = [r.template for r in win.routes.rows].index("/api/v1/items/{id}")
    win.routes.table.itemClicked.emit(win.routes.table.item(row, 0))
    assert win.filter_text.startswith("path~") or win.filter_bar.edit.text().startswith("path~")
    qtbot.wait(400)
    shown = win.visible_exchanges()
    assert shown and all(e.path.startswith("/api/v1/items/") and e.path.count("/") == 4 for e in shown)


def test_empty_store_shows_no_rows(qtbot) -> None:  # type: ignore[no-untyped-def]
    from ngxscope.store.memory import ExchangeStore

    panel = RoutesPanel(RouteTemplater())
    qtbot.addWidget(panel)
    panel.refresh(ExchangeStore(), time.time())
    assert panel.table.rowCount() == 0


def test_route_templates_added_and_edited_from_the_window(qtbot, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--route in the window: the context menu's add and edit write the routes file and the
    panel (and the Slowest panel sharing its templater) use it at once; a bad line is refused."""
    from PySide6.QtWidgets import QInputDialog, QMessageBox

    from ngxscope.store.memory import ExchangeStore
    from ngxscope.store.routes import load_route_file, routes_file

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    panel = RoutesPanel(RouteTemplater())
    qtbot.addWidget(panel)
    store = ExchangeStore()
    src = SyntheticSource(seed=5, threaded=False)
    now = time.time()
    batch = src.generate(400, now=now, spread=30.0)
    store.append_batch(batch)
    panel.refresh(store, now + 1)
    assert "/category/lighting" in [r.template for r in panel.rows]
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("/category/{name}", True))
    panel.add_route("/category/lighting")
    assert load_route_file() == ["/category/{name}"] and routes_file().is_file()
    panel.refresh(store, now + 1)
    templates = [r.template for r in panel.rows]
    assert "/category/{name}" in templates and "/category/lighting" not in templates
    warned: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warned.append(a[2]))
    assert not panel.apply_route_text("# mine\n/category/{name}\napi/{id}\n")
    assert "must start with '/'" in warned[0] and ":3:" in warned[0]
    assert load_route_file() == ["/category/{name}"]  # nothing written
    assert panel.apply_route_text("# mine\n/api/v1/{what}/{id}\n")
    assert load_route_file() == ["/api/v1/{what}/{id}"]
    assert panel.templater.template("/api/v1/items/7") == "/api/v1/{what}/{id}"
