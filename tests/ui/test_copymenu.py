"""The Copy as menus of the detail pane and the table (one row, several rows → a script)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint
from PySide6.QtGui import QGuiApplication, QPainter
from PySide6.QtWidgets import QMenu

from factories import make_exchange
from ngxscope.model import UpstreamAttempt
from ngxscope.store.redact import RedactPolicy, redact_exchange
from ngxscope.ui.copymenu import fill_copy_menu


def _texts(menu: QMenu) -> list[str]:
    return [a.text() for a in menu.actions() if not a.isSeparator()]


def _exchange() -> Any:
    head = "POST /api/echo HTTP/1.1\r\nHost: app\r\nX-Real-IP: 127.0.0.1\r\nContent-Length: 7\r\n\r\n"
    ex = make_exchange(method="POST", target="/upload", request_body=b'{"a":1}', request_body_size=7,
                       request_headers=[("Host", "localhost"), ("Authorization", "Bearer s3cret"),
                                        ("Content-Type", "application/json"), ("Content-Length", "7")],
                       upstream=[UpstreamAttempt(addr="127.0.0.1:8081", status=502),
                                 UpstreamAttempt(addr="127.0.0.1:8082", status=200, request_head=head)])
    return redact_exchange(ex, RedactPolicy.make())


def test_detail_copy_menu_copies_curl_and_upstream(window: Any, qtbot: Any, shots: Path) -> None:
    ex = _exchange()
    window.load([make_exchange(), ex])
    window.status.set_redaction({"redacted": True, "redact_headers": ["authorization"]})
    window.select_exchange(ex)
    pane = window.detail
    assert pane.copy_button.isEnabled()
    pane._fill_copy_menu()
    menu = pane.copy_menu
    texts = _texts(menu)
    assert texts[0].startswith("Masked values stay masked: Authorization")
    assert "curl" in texts and "Python requests" in texts
    assert "As nginx sent it to 127.0.0.1:8082 (attempt #2)" in texts
    assert not any("8081" in t for t in texts), "no head was sent to the refused peer"
    next(a for a in menu.actions() if a.text() == "curl").trigger()
    clip = QGuiApplication.clipboard().text()
    assert clip.startswith("# values masked when recorded (Authorization)")
    assert "--data-binary '{\"a\":1}'" in clip and "Bearer <redacted>" in clip
    sub = next(a for a in menu.actions() if "8082" in a.text()).menu()
    next(a for a in sub.actions() if a.text() == "curl").trigger()
    clip = QGuiApplication.clipboard().text()
    assert "--connect-to ::127.0.0.1:8082" in clip and "'X-Real-IP: 127.0.0.1'" in clip

    # a picture: the pane with the open menu (and its upstream submenu) drawn over it
    pane.setCurrentIndex(pane.upstream_tab)
    window.resize(1300, 900)
    qtbot.wait(50)
    image = pane.grab().toImage()
    menu.popup(pane.mapToGlobal(QPoint(0, 0)))
    qtbot.wait(50)
    sub.popup(QPoint(0, 0))
    qtbot.wait(50)
    painter = QPainter(image)
    x = image.width() - menu.width() - sub.width() - 10
    painter.drawPixmap(x, 30, menu.grab())
    painter.drawPixmap(x + menu.width() - 4, 30 + menu.actionGeometry(menu.actions()[-1]).y(),
                       sub.grab())
    painter.end()
    menu.hide()
    sub.hide()
    assert image.save(str(shots / "copy-as-menu.png"))


def test_table_menu_several_rows_make_one_script(window: Any) -> None:
    rows = [make_exchange(), make_exchange(method="DELETE"), make_exchange()]
    window.load(rows)
    window.status.set_redaction({"redacted": False})
    window.table.selectRow(0)
    window.table.selectionModel().select(
        window.proxy.index(1, 0), window.table.selectionModel().SelectionFlag.Select
        | window.table.selectionModel().SelectionFlag.Rows)
    assert window.selected_exchanges() == rows[:2]
    menu = QMenu()
    fill_copy_menu(menu, window.selected_exchanges(), window.status.redaction_target)
    texts = _texts(menu)
    assert texts[0] == "Secrets included (recorded with --no-redact)"
    act = next(a for a in menu.actions() if a.text().startswith("curl (2 requests"))
    act.trigger()
    clip = QGuiApplication.clipboard().text()
    assert clip.startswith("#!/bin/bash") and clip.count("\ncurl ") == 2 and "-X DELETE" in clip


def test_nothing_to_copy_for_unparsed_request() -> None:
    menu = QMenu()
    fill_copy_menu(menu, [make_exchange(method="", target="")], None)
    assert _texts(menu) == ["Nothing to copy (no HTTP request line captured)"]
