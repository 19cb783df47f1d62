"""The detail pane names the location and the trace id a request arrived with, and copies it."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication

from factories import make_exchange
from ngxscope.ui.detail import DetailPane

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_trace_id_shown_and_copied(qtbot) -> None:  # type: ignore[no-untyped-def]
    pane = DetailPane()
    qtbot.addWidget(pane)
    ex = make_exchange(request_headers=[("Host", "a"), ("traceparent", TP)])
    ex.server_block, ex.location = "shop", "/api/"
    pane.show_exchange(ex)
    assert pane.conn_labels["Trace"].text() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert pane.conn_labels["Location"].text() == "shop \u203a /api/"
    ex.location_via = "nginx"
    pane.show_exchange(ex)
    assert pane.conn_labels["Location"].text() == "shop \u203a /api/  (read from nginx's memory)"
    assert pane.copy_trace.isEnabled()
    pane.copy_trace.click()
    assert QGuiApplication.clipboard().text() == "4bf92f3577b34da6a3ce929d0e0e4736"
    pane.show_exchange(make_exchange())
    assert not pane.copy_trace.isEnabled() and pane.conn_labels["Trace"].text() == "(no traceparent)"
